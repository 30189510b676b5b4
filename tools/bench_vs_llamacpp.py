#!/usr/bin/env python3
# Prompt (pp) and generation (tg) speed of minfer and of llama.cpp (llama-cpp-python from PyPI) on
# the same GGUF file, same thread count and same token counts, measured in one run and printed side
# by side. The two engines alternate repetition by repetition, so machine noise hits both alike.
#   python3 tools/bench_vs_llamacpp.py MINFER_BINARY MODEL.gguf [-p 128] [-n 64] [-r 5] [-t 2] [--no-extra-bufts]
import argparse
import json
import random
import statistics
import subprocess
import time


def minfer_once(binary, model, p, n, t):
    out = subprocess.run([binary, "bench", "-m", model, "-p", str(p), "-n", str(n), "-r", "1", "-t", str(t),
                          "--device", "cpu", "-o", "json"], check=True, capture_output=True, text=True).stdout
    j = json.loads(out)
    return j["pp"]["tok_s"], j["tg"]["tok_s"]


def llamacpp_once(llm, n_vocab, p, n):
    rng = random.Random(42)
    prompt = [rng.randrange(n_vocab) for _ in range(p)]
    gen = [rng.randrange(n_vocab) for _ in range(n)]
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    pp = p / (time.perf_counter() - t0)
    llm.reset()
    t0 = time.perf_counter()
    for tok in gen:
        llm.eval([tok])
    tg = n / (time.perf_counter() - t0)
    return pp, tg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("minfer")
    ap.add_argument("model")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--no-extra-bufts", action="store_true",
                    help="llama.cpp with plain CPU buffers (use_extra_bufts = false): its AMX / repacked buffer "
                         "types fail on some graphs, e.g. GGML_ASSERT(*cur_backend_id != -1) on DeepSeek-V2")
    a = ap.parse_args()

    import llama_cpp
    if a.no_extra_bufts:
        default_params = llama_cpp.llama_model_default_params

        def plain_params():
            p = default_params()
            p.use_extra_bufts = False
            return p

        llama_cpp.llama_model_default_params = plain_params
        llama_cpp.llama.llama_cpp.llama_model_default_params = plain_params
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=max(a.p, a.n) + 16, n_batch=512, n_threads=a.t,
                          n_threads_batch=a.t, verbose=False)
    n_vocab = llm.n_vocab()
    llamacpp_once(llm, n_vocab, 16, 4)  # warm-up
    minfer_once(a.minfer, a.model, 16, 4, a.t)
    res = {"minfer": ([], []), "llama.cpp": ([], [])}
    for _ in range(a.r):
        for name in res:
            pp, tg = minfer_once(a.minfer, a.model, a.p, a.n, a.t) if name == "minfer" else \
                llamacpp_once(llm, n_vocab, a.p, a.n)
            res[name][0].append(pp)
            res[name][1].append(tg)

    def fmt(xs):
        return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}"

    print(f"| engine | pp{a.p} t/s | tg{a.n} t/s |")
    print("| --- | ---: | ---: |")
    for name, (pp, tg) in res.items():
        print(f"| {name} {'(llama-cpp-python ' + llama_cpp.__version__ + ')' if name != 'minfer' else ''} | "
              f"{fmt(pp)} | {fmt(tg)} |")
    mp, mt = statistics.mean(res["minfer"][0]), statistics.mean(res["minfer"][1])
    lp, lt = statistics.mean(res["llama.cpp"][0]), statistics.mean(res["llama.cpp"][1])
    print(f"\nminfer / llama.cpp: pp {mp / lp:.2f}x, tg {mt / lt:.2f}x")


if __name__ == "__main__":
    main()
