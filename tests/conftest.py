"""Session-wide test setup.

TRITON_INTERPRET must be set before triton is first imported in the process (timm, lightning and torch._dynamo
import it early), or triton's own jit-compiled helpers refuse to run inside interpreted kernels; CPU tests of the
Triton backend (test_scan_triton.py) need the interpreter. No GPU code runs on the test machines, so setting it for
the whole session changes nothing else; tests that need a process without it remove it from the environment.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
