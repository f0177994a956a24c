"""vidcom2: visual-token compressors for video LLMs (VidCom2 and baselines), pure PyTorch.

Tensor API::

    keep = vidcom2.select("vidcom2", features, retention_ratio=0.25)     # features [F, N, D] -> bool [F, N]

Model API (HF transformers 5.x video LLMs)::

    with vidcom2.compress(model, method="vidcom2", retention_ratio=0.25):
        model.generate(**inputs)
"""

import vidcom2.methods  # noqa: F401  (registers the built-in methods; the registry itself imports none)
from vidcom2.api import apply, select
from vidcom2.budget import check_ratio, count, frame_budgets
from vidcom2.compress import compress as compress  # binds the name over the submodule vidcom2.compress
from vidcom2.registry import get_method, list_methods
from vidcom2.types import MethodInfo, Selection

__version__ = "0.1.0"

__all__ = [
    "apply",
    "select",
    "check_ratio",
    "count",
    "frame_budgets",
    "get_method",
    "list_methods",
    "MethodInfo",
    "Selection",
    "__version__",
]

