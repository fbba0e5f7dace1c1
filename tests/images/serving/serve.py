"""Loads a safetensors model like a model server would, then reports ready and idles until SIGTERM."""

import os
import signal
import sys
import time
from pathlib import Path

from safetensors.numpy import load_file


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 gets no default SIGTERM action
    model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ["MODEL_DIR"])
    started = time.monotonic()
    tensors = parameters = 0
    files = sorted(model_dir.rglob("*.safetensors"))
    for path in files:
        for array in load_file(path).values():
            tensors += 1
            parameters += int(array.size)
    if not tensors:
        print(f"serve: no tensors under {model_dir}", flush=True)
        return 1
    print(f"serve: loaded {tensors} tensors ({parameters} parameters) from {len(files)} files in {model_dir} "
          f"in {time.monotonic() - started:.2f}s", flush=True)
    Path("/tmp/ready").write_text("ready\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
