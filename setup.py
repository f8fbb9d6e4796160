"""Build the tradestack packages and the Cython extensions (ext._pricebook, ext._wire,
ext._journal, ext._orders, ext._hist, ext._demote).

    python setup.py build_ext --inplace

-O2 and no -march: the .so must run on whatever x86-64 (or ARM) box CI and the other
processes use; the hot paths are a handful of loads/stores where -march buys nothing.
ext._wire adds -ffp-contract=off: its random walk must produce the same doubles as the
pure-Python twin, and a fused multiply-add (the default on ARM) would round differently.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

CFLAGS = ["-O2", "-std=gnu11", "-Wno-unused-function"]

extensions = [
    Extension(
        "ext._pricebook",
        sources=["ext/_pricebook.pyx"],
        include_dirs=["ext"],
        depends=["ext/seqlock.h", "ext/_pricebook.pxd"],
        extra_compile_args=CFLAGS,
    ),
    Extension(
        "ext._wire",
        sources=["ext/_wire.pyx"],
        include_dirs=["ext"],       # seqlock.h, via the cimport of ext._pricebook
        depends=["ext/seqlock.h", "ext/_pricebook.pxd"],
        extra_compile_args=[*CFLAGS, "-ffp-contract=off"],
        libraries=["m"],
    ),
    Extension(
        "ext._journal",
        sources=["ext/_journal.pyx"],
        depends=["ext/_journal.pxd"],
        extra_compile_args=CFLAGS,
    ),
    Extension(
        "ext._orders",
        sources=["ext/_orders.pyx"],
        depends=["ext/_orders.pxd", "ext/_journal.pxd"],   # store_order, via its cimport
        extra_compile_args=CFLAGS,
    ),
    Extension(
        "ext._hist",
        sources=["ext/_hist.pyx"],
        extra_compile_args=CFLAGS,
    ),
    Extension(
        "ext._demote",
        sources=["ext/_demote.pyx"],
        extra_compile_args=CFLAGS,
    ),
]

setup(
    name="tradestack",
    version="0.1.0",
    packages=["reactor", "ext", "processes"],
    package_data={"ext": ["*.pxd", "*.pyi", "*.h", "*.pyx"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
        },
    ),
    python_requires=">=3.11",
    zip_safe=False,
)
