"""serve fixes glibc's mmap threshold, so big messages do not leave their memory behind."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")

FRAGMENT = r"""
import sys
from forgelab.malloc import keep_heap_small

def rss_kb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])

if sys.argv[1] == "fixed":
    assert keep_heap_small()
big = [bytearray(1 << 20) for _ in range(4)]
del big  # glibc on its own now serves blocks up to 1 MB from the heap
before = rss_kb()
blocks, kept = [], []
for _ in range(200):  # 40 MB of 200 KB blocks (a big message's copies), small ones that stay between them
    blocks.append(bytearray(200 * 1024))
    kept.append(bytearray(2000))
del blocks
print((rss_kb() - before) // 1024)
"""


def kept_mb(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FRAGMENT, mode], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_freed_big_blocks_go_back_to_the_system_once_the_threshold_is_fixed():
    if kept_mb("default") < 20:
        pytest.skip("this malloc gives the memory back on its own")
    assert kept_mb("fixed") < 5

