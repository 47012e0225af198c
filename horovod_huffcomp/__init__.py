"""horovod_huffcomp: entropy-coded gradient compression for Horovod.

    import horovod_huffcomp as hc
    blob = hc.encode(x, quantizer="qsgd", coder="auto", levels=16, norm="l2", seed=0)
    y = hc.decode(blob)
    info = hc.inspect(blob)
"""
from ._numba_cache import ensure_fresh

ensure_fresh()

from .api import decode, decode_many, encode, encode_many, inspect  # noqa: E402
from .errors import NonFiniteError, PayloadError  # noqa: E402
from .payload import VERSION as FORMAT_VERSION  # noqa: E402

__version__ = "0.1.0"
__all__ = ["encode", "encode_many", "decode", "decode_many", "inspect", "PayloadError",
           "NonFiniteError", "FORMAT_VERSION", "__version__"]
