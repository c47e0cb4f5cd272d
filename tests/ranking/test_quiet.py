"""The quiet console (ranking/quiet.py): start-up lines held back, the
rest passed on."""

import os
import subprocess
import sys

from ranking import quiet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Lines as TensorFlow 2.21 writes them on this machine before absl's
# logging is initialised.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1796284958.673559    2744 port.cc:153] oneDNN custom "
    "operations are on.",
    "W0000 00:00:1796284958.673875    2744 cudart_stub.cc:31] Could not find "
    "cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796284961.879286    2744 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error",
    "I0000 00:00:1796285898.871492   13857 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions in "
    "performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other "
    "operations, rebuild TensorFlow with the appropriate compiler flags.",
]
KEPT = [
    "E0000 00:00:1796284961.879286    2744 saver.cc:52] a real error",
    "Traceback (most recent call last):",
    "ValueError: Unknown optimizer method 'x'",
    "evaluation day 13 (2022-04-28): 50,000 examples",
]


def test_only_the_start_up_lines_are_noise():
  assert all(quiet.is_startup_noise(line) for line in NOISE)
  assert not any(quiet.is_startup_noise(line) for line in KEPT)


def _child(argv_tail):
  # The lines go to file descriptor 2 directly, as TensorFlow's C++ writes
  # them, and the block then raises: what it held must still come out.
  code = (
      "import os, sys\n"
      "from ranking import quiet\n"
      f"lines = {NOISE + KEPT!r}\n"
      "try:\n"
      "  with quiet.startup_filtered("
      "not quiet.verbose_requested(sys.argv)):\n"
      "    os.write(2, ''.join(l + '\\n' for l in lines).encode())\n"
      "    raise RuntimeError('raised inside')\n"
      "except RuntimeError:\n"
      "  print('after', file=sys.stderr)\n")
  return subprocess.run([sys.executable, "-c", code] + argv_tail, cwd=ROOT,
                        capture_output=True, text=True, timeout=60)


def test_held_stderr_is_passed_on_without_the_noise():
  out = _child([])
  assert out.returncode == 0, out.stderr
  assert out.stderr.splitlines() == KEPT + ["after"]


def test_verbosity_shows_everything():
  assert quiet.verbose_requested(["train.py", "--verbosity=1"])
  assert quiet.verbose_requested(["train.py", "-v", "1"])
  assert not quiet.verbose_requested(["train.py", "--model_dir=v"])
  out = _child(["--verbosity=0"])
  assert out.stderr.splitlines() == NOISE + KEPT + ["after"]
