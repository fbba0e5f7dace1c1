"""The images the real node runs, built from this repository (see modelcache_devcluster.images)."""

from __future__ import annotations

from pathlib import Path

from modelcache_devcluster.images import BASE_IMAGE, BuiltImage, ImageBuilder

SERVING_DIR = Path(__file__).resolve().parents[1] / "images" / "serving"
SERVING_IMAGE = "docker.io/library/modelcache-serving:test"


def build_images(builder: ImageBuilder | None = None) -> dict[str, BuiltImage]:
    """pause, the debootstrapped python base, the project's Dockerfile, and the serving stand-in (on the base)."""
    builder = builder or ImageBuilder()
    base = builder.base()
    serving = builder.dockerfile(SERVING_IMAGE, SERVING_DIR / "Dockerfile", SERVING_DIR,
                                 [SERVING_DIR / "serve.py"], parents=[base], build_args={"BASE_IMAGE": BASE_IMAGE})
    return {"pause": builder.pause(), "base": base, "operator": builder.operator(), "serving": serving}
