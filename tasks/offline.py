"""Make Ultralytics run offline and quietly inside a job process (BRIEF §5), before it is first imported.

Without this, a training job downloads fonts, checks pip, sends analytics, syncs settings and floods the worker log
with progress bars. Everything goes under the job process's own config dir so jobs never share mutable settings.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

INTEGRATIONS_OFF = {
    "sync": False,
    "hub": False,
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "neptune": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
}
FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def _font_source() -> Path | None:
    """Any TTF that ships with the installed packages (matplotlib's DejaVu Sans), used in place of Arial."""
    try:
        import matplotlib
    except ImportError:
        return None
    candidate = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return candidate if candidate.is_file() else None


def prepare_environment(config_dir: Path, threads: int) -> None:
    """Set the variables Ultralytics reads at import time and place fonts so nothing is downloaded."""
    config_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "false",
            "YOLO_VERBOSE": "false",
            "YOLO_CONFIG_DIR": str(config_dir),
            "MPLCONFIGDIR": str(config_dir / "matplotlib"),
            "OMP_NUM_THREADS": str(threads),
            "TQDM_DISABLE": "1",
        }
    )
    fonts = config_dir / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    source = _font_source()
    for name in FONTS:
        if source is not None and not (fonts / name).exists():
            shutil.copyfile(source, fonts / name)


def settle_ultralytics() -> None:
    """Turn off settings sync and every integration callback (call after the first import of ultralytics)."""
    from ultralytics.utils import SETTINGS

    SETTINGS.update({k: v for k, v in INTEGRATIONS_OFF.items() if k in SETTINGS})
