"""The training stages by name: ``divcolor-train STAGE`` (the CLI) and the results report (which
rebuilds each shipped model's commands from its stage settings) both read this table.

It imports the stage modules and nothing that imports it back.
"""

from __future__ import annotations

from .stages import backbone, gcrf, gcrf_hints, gcrf_hoc, pic, vae_mdn

# name → (settings dataclass, training function, one line of help)
TRAIN_STAGES = {
    "backbone": (backbone.BackboneStageConfig, backbone.train_backbone,
                 "the shared grey-image network: per-pixel ab classifier (Zhang et al. 2016)"),
    "vae": (vae_mdn.VAEStageConfig, vae_mdn.train_vae, "VAE-MDN step 1: VAE on ab fields (+ grey encoder)"),
    "mdn": (vae_mdn.MDNStageConfig, vae_mdn.train_mdn, "VAE-MDN step 2: MDN P(z | grey) on the frozen VAE"),
    "mdn-tune": (vae_mdn.TuneStageConfig, vae_mdn.train_tune,
                 "VAE-MDN step 3 (optional): MDN, decoder and adapter tuned on decoded mixture means (multiple choice)"),
    "gcrf-unary": (gcrf.GCRFUnaryStageConfig, gcrf.train_unary, "G-CRF phase 1: the VAE (= vae stage; --init-from reuses a VAE-MDN run)"),
    "gcrf-hoc": (gcrf_hoc.GCRFHocStageConfig, gcrf_hoc.train_hoc, "G-CRF phase 2: HOC embedding net + decoder top layers"),
    "gcrf-mdn": (gcrf.GCRFMDNStageConfig, gcrf.train_gcrf_mdn, "G-CRF stage 2: MDN P(z | grey) (= mdn stage)"),
    "gcrf-hints": (gcrf_hints.GCRFHintsStageConfig, gcrf_hints.train_hints, "G-CRF: learned hint branch (Zhang et al. 2017) on a finished model"),
    "pic": (pic.PICStageConfig, pic.train_pic, "PIC: conditional PixelCNN++ over chroma given L"),
}
