import subprocess
import sys


def test_engine_and_training_import_without_qt():
    code = (
        "import sys; sys.modules['PySide6'] = None; sys.modules['qtawesome'] = None\n"
        "import engine.cli, engine.colorizer, engine.io, engine.color, engine.checkpoint, engine.metrics\n"
        "import engine.models.vae_mdn, engine.strokes, engine.propagate, training.cli, training.loop, training.losses, training.data\n"
        "import training.stages.vae_mdn, training.stages.evaluate\n"
        "assert not any(m.startswith('PySide6.') for m in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
