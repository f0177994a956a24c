"""Built-in methods; importing this package registers them (one module per method, model-agnostic)."""

from vidcom2.methods import divprune, dycoke, fastv, none, pdrop, random, uniform, vidcom2, visionzip  # noqa: F401
