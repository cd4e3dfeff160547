"""Build hook (metadata lives in pyproject.toml): compiles the X12 engine's hot modules with
Cython when it can — ``gateway/x12/_accelerate.py`` lists them and decides at import time
whether the compiled extension is current. Nothing depends on it: without a C compiler, or
if a module fails to compile, the build goes on and that module runs from its ``.py``."""

import json
import runpy
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ACCELERATE = runpy.run_path(str(HERE / "gateway" / "x12" / "_accelerate.py"))
MODULES = ACCELERATE["MODULES"]


def _extensions():
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("setup.py: Cython not available, the X12 engine runs as pure Python",
              file=sys.stderr)
        return []
    extensions = []
    for name in MODULES:  # one at a time: a module Cython rejects stays pure, the rest do not
        source = str(Path(*name.split(".")).with_suffix(".py"))
        try:
            extensions += cythonize([source], compiler_directives={"language_level": 3},
                                    quiet=True)
        except Exception as exc:  # noqa: BLE001 - optional speed-up
            print(f"setup.py: Cython failed on {source} ({exc}); it runs as pure Python",
                  file=sys.stderr)
    return extensions


class OptionalBuildExt(build_ext):
    """Builds what it can; records the source digest of each module it compiled."""

    def run(self):
        self.built = []
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - no compiler at all
            print(f"setup.py: no compiled X12 engine ({exc})", file=sys.stderr)
        digest = ACCELERATE["source_digest"]
        digests = {name: digest(HERE / Path(*name.split(".")).with_suffix(".py"))
                   for name in self.built}
        # beside the sources (editable installs import from there) and in the build tree
        for root in {HERE, HERE if self.inplace else Path(self.build_lib)}:
            target = root / "gateway" / "x12" / "_compiled.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(digests, indent=1, sort_keys=True), encoding="utf-8")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
            self.built.append(ext.name)
        except Exception as exc:  # noqa: BLE001 - that module stays pure Python
            print(f"setup.py: {ext.name} not compiled ({exc})", file=sys.stderr)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
