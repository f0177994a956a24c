"""Built-in methods; importing this package registers them (one module per method, model-agnostic)."""

from vidcom2.methods import (  # noqa: F401  (*_vc2: the baseline ports of the VidCom2 repository)
    divprune,
    dycoke,
    evs,
    fastv,
    fastvid,
    fastvid_vc2,
    flashvid,
    framefusion,
    holitom,
    holitom_vc2,
    none,
    pdrop,
    prunevid,
    random,
    sparsevlm,
    uniform,
    vidcom2,
    visionzip,
    visionzip_vc2,
    vispruner,
)
