"""Loads a safetensors model like a model server would, then reports ready and idles until SIGTERM.

With TRITON_CACHE_DIR set (the injected compile cache) it also behaves like an engine's kernel cache at
start: it reuses the compiled kernel of this model if the folder has one, else "compiles" it and writes it
the way Triton does (a temporary file renamed into <cache>/<hash>/), so concurrent starts never see half a file.
"""

import hashlib
import os
import signal
import sys
import time
from pathlib import Path

from safetensors.numpy import load_file


def compiled_kernel(cache_dir: Path, parameters: int) -> str:
    key = hashlib.sha256(f"standin-kernel:{parameters}".encode()).hexdigest()
    kernel = cache_dir / key / "kernel.json"
    if kernel.exists():
        return f"serve: compile cache hit: {kernel} ({kernel.read_text().strip()})"
    kernel.parent.mkdir(parents=True, exist_ok=True)
    temporary = kernel.parent / f".{kernel.name}.{os.getpid()}.tmp"
    temporary.write_text(f'{{"kernel": "{key[:12]}", "compiled_by": "{os.environ.get("HOSTNAME", "")}"}}\n')
    os.replace(temporary, kernel)
    return f"serve: compile cache miss: compiled and wrote {kernel}"


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
    if os.environ.get("TRITON_CACHE_DIR"):
        print(compiled_kernel(Path(os.environ["TRITON_CACHE_DIR"]), parameters), flush=True)
    Path("/tmp/ready").write_text("ready\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
