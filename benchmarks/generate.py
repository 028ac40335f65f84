"""Text generation: edgeai fp32 / optimized / int8 / int4 against transformers' generate (PyTorch eager, KV cache)
and, with --genai-python, against onnxruntime-genai running its model builder's output.

    python benchmarks/generate.py [--rounds 3] [--prompt-tokens 128] [--new-tokens 128] [--work DIR]
                                  [--genai-python PYTHON]

onnxruntime-genai requires the CPU ``onnxruntime`` package and a newer transformers than edgeai's
export environment pins (its builder imports transformers 5 classes), so it lives in an
environment of its own; PYTHON is that environment's interpreter:

    python -m venv /tmp/genai && /tmp/genai/bin/pip install torch==2.13.0 onnxruntime-genai transformers onnx onnx-ir

Targets (issue: text generation): int4 decode >= 3x PyTorch's tokens/s, fp32 decode >= 1.3x,
time to first token <= 0.7x PyTorch's. The model is randomly initialized (seeded) with
SmolLM-135M's shape (a Llama: 30 layers, hidden 576, 9 heads, 3 KV heads, vocabulary 49,152),
built from its config here: nothing is downloaded. Greedy decoding of ``--new-tokens`` tokens
after a ``--prompt-tokens`` prompt, with EOS disabled so every engine decodes the same count.
Every engine runs in a process of its own at 2 threads, alternating; a round is one generation
per engine. Decode tokens/s counts the tokens after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _report  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

ENGINES = ("pytorch", "edgeai fp32", "edgeai optimized", "edgeai int8", "edgeai int4")
THREADS = 2
SMOLLM = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
          "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 2048, "tie_word_embeddings": True,
          "rope_theta": 10000.0, "bos_token_id": 0, "eos_token_id": 0}


def build(work: Path) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from edgeai.data.texts import TUNING, tweets

    ck = work / "smollm-shape"
    if not (ck / "config.json").is_file():
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**SMOLLM)).eval().save_pretrained(ck)
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(tweets(5000) + TUNING, vocab_size=4000, special_tokens=["<|endoftext|>"], show_progress=False)
        PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>").save_pretrained(ck)
    if not (work / "pkg" / "manifest.json").is_file():
        from edgeai.export import export_model

        export_model("hf", work / "pkg", model=str(ck), task="text-generation",
                     progress=lambda m: print(f"building: {m}", file=sys.stderr))


def worker(engine: str, work: Path, prompt_tokens: int, new_tokens: int) -> dict:
    import numpy as np

    ids = np.random.default_rng(0).integers(10, 3000, size=prompt_tokens).tolist()
    if engine == "pytorch":
        import torch
        from transformers import LlamaForCausalLM

        torch.set_num_threads(THREADS)
        model = LlamaForCausalLM.from_pretrained(str(work / "smollm-shape")).eval()
        first = {}

        class Clock:  # transformers' streamer interface: put() is called with each new token
            def put(self, value):  # first with the prompt, then with each new token
                if "prompt" not in first:
                    first["prompt"] = True
                else:
                    first.setdefault("t", time.perf_counter())

            def end(self):
                pass

        x = torch.tensor([ids])
        with torch.inference_mode():
            model.generate(x, max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)  # warm-up
            t0 = time.perf_counter()
            model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, eos_token_id=None, pad_token_id=0, streamer=Clock())
            t1 = time.perf_counter()
        ttft = first["t"] - t0
    else:
        import edgeai
        from edgeai.generation import Request, Sampling, generator_for

        pipe = edgeai.load(work / "pkg", provider="cpu", variant=engine.split()[1], threads=THREADS)
        gen = generator_for(pipe)
        gen.eos = set()  # every engine decodes the same number of tokens
        gen.run(Request(ids, Sampling(max_new_tokens=4)))  # warm-up
        req = Request(ids, Sampling(max_new_tokens=new_tokens))
        t0 = time.perf_counter()
        gen.run(req)
        t1 = time.perf_counter()
        ttft = req.ttft_ms / 1e3
    return {"ttft_ms": ttft * 1e3, "decode_tps": (new_tokens - 1) / (t1 - t0 - ttft)}


def genai_worker(engine: str, work: Path, prompt_tokens: int, new_tokens: int) -> dict:
    """onnxruntime-genai on its builder's model (run with --genai-python's interpreter). The
    first token is timed to when generate_next_token has returned it."""
    import numpy as np
    import onnxruntime_genai as og

    ids = np.random.default_rng(0).integers(10, 3000, size=prompt_tokens).tolist()
    model = og.Model(str(work / engine.replace(" ", "-")))

    def generate(n: int) -> tuple[float, float]:
        params = og.GeneratorParams(model)
        total = prompt_tokens + n
        params.set_search_options(max_length=total, min_length=total, do_sample=False)  # min_length: no EOS
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        first = None
        while not gen.is_done():
            gen.generate_next_token()
            first = first or time.perf_counter()
        return first - t0, time.perf_counter() - first

    generate(4)  # warm-up
    ttft, rest = generate(new_tokens)
    return {"ttft_ms": ttft * 1e3, "decode_tps": (new_tokens - 1) / rest}


def build_genai(python: str, work: Path) -> list[str]:
    """The model builder's fp32 and int4 CPU models of the same checkpoint, at THREADS threads."""
    engines = []
    for precision in ("fp32", "int4"):
        out = work / f"ort-genai-{precision}"
        if not (out / "genai_config.json").is_file():
            print(f"building: onnxruntime-genai's model builder, {precision}", file=sys.stderr)
            subprocess.run([python, "-m", "onnxruntime_genai.models.builder", "-i", str(work / "smollm-shape"), "-o", str(out),
                            "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")], check=True, capture_output=True)
            cfg = json.loads((out / "genai_config.json").read_text())
            cfg["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = THREADS
            (out / "genai_config.json").write_text(json.dumps(cfg, indent=2))
        engines.append(f"ort-genai {precision}")
    return engines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--work", default="/tmp/edgeai-gen-bench")
    ap.add_argument("--genai-python", help="An interpreter with onnxruntime-genai installed (see above).")
    ap.add_argument("--worker")
    ap.add_argument("--out", default=str(HERE / "results" / "generate.md"))
    args = ap.parse_args()
    work = Path(args.work)
    if args.worker:
        run = genai_worker if args.worker.startswith("ort-genai") else worker
        print(json.dumps(run(args.worker, work, args.prompt_tokens, args.new_tokens)))
        return
    build(work)
    engines = ENGINES + (tuple(build_genai(args.genai_python, work)) if args.genai_python else ())
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for r in range(args.rounds):
        for engine in engines if r % 2 == 0 else tuple(reversed(engines)):
            python = args.genai_python if engine.startswith("ort-genai") else sys.executable
            cmd = [python, __file__, "--worker", engine, "--work", str(work), "--prompt-tokens",
                   str(args.prompt_tokens), "--new-tokens", str(args.new_tokens)]
            got = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            runs[engine].append(got)
            print(f"round {r + 1}: {engine}: {got}", file=sys.stderr)
    pt = runs["pytorch"]
    lines = [
        "# Text generation: edgeai vs transformers generate (PyTorch eager, KV cache)", "",
        f"Command: `python benchmarks/generate.py --rounds {args.rounds} --prompt-tokens {args.prompt_tokens} "
        f"--new-tokens {args.new_tokens}{' --genai-python PYTHON' if args.genai_python else ''}`  ",
        _report.machine_line(str(THREADS)),
        *([f"onnxruntime-genai {_genai_versions(args.genai_python)} (its own environment), model builder output, "
           f"fp32 and int4 for the CPU, {THREADS} intra-op threads  "] if args.genai_python else []),
        f"Date: {time.strftime('%Y-%m-%d')}. A randomly initialized Llama with SmolLM-135M's shape; greedy, batch 1, "
        "each engine in its own process, alternating. Ratios per round against PyTorch in the same round: median (best).", "",
        "| engine | time to first token | ratio | decode tokens/s | ratio |", "|---|---|---|---|---|",
    ]
    for engine, got in runs.items():
        ttft = [g["ttft_ms"] / p["ttft_ms"] for g, p in zip(got, pt)]
        tps = [g["decode_tps"] / p["decode_tps"] for g, p in zip(got, pt)]
        lines.append(f"| {engine} | {statistics.median(g['ttft_ms'] for g in got):.0f} ms | {statistics.median(ttft):.2f} "
                     f"({min(ttft):.2f}) | {statistics.median(g['decode_tps'] for g in got):.1f} | "
                     f"{statistics.median(tps):.2f} ({max(tps):.2f}) |")
    lines += ["", "Targets: int4 decode >= 3x, fp32 decode >= 1.3x, time to first token <= 0.7x PyTorch's."]
    if args.genai_python:
        lines += ["", "onnxruntime-genai's first token is timed to when generate_next_token returns it (the prompt's "
                  "pass and the token's pick), edgeai's to when the prompt's pass has picked it."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def _genai_versions(python: str) -> str:
    code = "import onnxruntime_genai as g, onnxruntime as o; print(g.__version__, 'on onnxruntime', o.__version__)"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
