"""placeholder"""
from pathlib import Path
from .models.vae_mdn import VAEMDN
def load_model(path):
    return VAEMDN.from_checkpoint(path)
