"""The compiled per-message path (nbdscope/_fastpath.c) is optional: when it fails to build,
nbdscope installs without it and runs the pure-Python path (nbdscope/fastpath.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("nbdscope._fastpath", ["nbdscope/_fastpath.c"], optional=True,
                             extra_compile_args=["-O2", "-ffp-contract=off", "-std=c11"])])
