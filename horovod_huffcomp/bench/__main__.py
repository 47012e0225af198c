"""``python -m horovod_huffcomp.bench {codec,quantizers,train,exchange,gpu,parse}`` (also
``horovod-huffcomp-bench``)."""
from __future__ import annotations

import sys

COMMANDS = {"codec": "horovod_huffcomp.bench.codec",
            "quantizers": "horovod_huffcomp.bench.quantizers",
            "train": "horovod_huffcomp.bench.train",
            "exchange": "horovod_huffcomp.bench.exchange", "gpu": "horovod_huffcomp.bench.gpu",
            "parse": "horovod_huffcomp.bench.parse"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m horovod_huffcomp.bench {{{','.join(COMMANDS)}}} [options]")
        return 2
    import importlib

    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
