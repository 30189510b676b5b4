#!/usr/bin/env python3
"""Instructions a kernel holds, per function, in two builds' object files (cuobjdump -sass), and where
its griddepcontrol.wait (ACQBULK) stands: what runs before it overlaps the kernel before (s14e).

Usage: python3 docs/bench/sass-count.py OLD.o NEW.o REGEX
  OLD.o / NEW.o: e.g. build/CMakeFiles/minfer_cuda.dir/cuda/matvec.cu.o of two builds (or the same
  file twice); REGEX picks the mangled kernel names. Prints, a function a line: instructions in OLD,
  in NEW (NOPs left out), and NEW's ACQBULK position. Static counts: a loop counts once, so read the
  SASS of the path that runs (cuobjdump -sass -fun NAME FILE) before predicting from them.
cuobjdump is not in the CUDA toolkit here; PyPI has it: pip download --no-deps nvidia-cuda-cuobjdump,
then unzip the wheel and put its bin/cuobjdump on PATH (nvidia-cuda-nvdisasm likewise).
"""
import re
import subprocess
import sys


def functions(obj):
    out = subprocess.run(["cuobjdump", "-sass", obj], capture_output=True, text=True, check=True).stdout
    funcs, cur = {}, None
    for line in out.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            cur = m.group(1)
            funcs[cur] = []
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m and cur and m.group(2).strip() != "NOP":
            funcs[cur].append(m.group(2).strip())
    return funcs


def main():
    old, new, pattern = functions(sys.argv[1]), functions(sys.argv[2]), sys.argv[3]
    for name in sorted(set(old) | set(new)):
        if not re.search(pattern, name):
            continue
        ins = new.get(name, [])
        wait = next((i for i, s in enumerate(ins) if s.startswith("ACQBULK")), None)
        short = re.sub(r"_ZN2mf\d+_GLOBAL__N__\w+?_\d+_\w+?_cu_\w{8}\d+", "", name)[:100]
        print(f"{len(old.get(name, [])):6d} {len(ins):6d}  wait at {wait if wait is not None else '-':>4}  {short}")


if __name__ == "__main__":
    main()
