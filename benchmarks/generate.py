"""Text generation: edgeai fp32 / int8 / int4 against transformers' generate (PyTorch eager, KV cache).

    python benchmarks/generate.py [--rounds 3] [--prompt-tokens 128] [--new-tokens 128] [--work DIR]

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

ENGINES = ("pytorch", "edgeai fp32", "edgeai int8", "edgeai int4")
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
        from edgeai.generation import Request, Sampling

        pipe = edgeai.load(work / "pkg", provider="cpu", variant=engine.split()[1], threads=THREADS)
        gen = pipe._generator()
        gen.eos = set()  # every engine decodes the same number of tokens
        gen.run(Request(ids, Sampling(max_new_tokens=4)))  # warm-up
        req = Request(ids, Sampling(max_new_tokens=new_tokens))
        t0 = time.perf_counter()
        gen.run(req)
        t1 = time.perf_counter()
        ttft = req.ttft_ms / 1e3
    return {"ttft_ms": ttft * 1e3, "decode_tps": (new_tokens - 1) / (t1 - t0 - ttft)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--work", default="/tmp/edgeai-gen-bench")
    ap.add_argument("--worker")
    ap.add_argument("--out", default=str(HERE / "results" / "generate.md"))
    args = ap.parse_args()
    work = Path(args.work)
    if args.worker:
        print(json.dumps(worker(args.worker, work, args.prompt_tokens, args.new_tokens)))
        return
    build(work)
    runs: dict[str, list[dict]] = {e: [] for e in ENGINES}
    for r in range(args.rounds):
        for engine in ENGINES if r % 2 == 0 else tuple(reversed(ENGINES)):
            cmd = [sys.executable, __file__, "--worker", engine, "--work", str(work), "--prompt-tokens",
                   str(args.prompt_tokens), "--new-tokens", str(args.new_tokens)]
            got = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            runs[engine].append(got)
            print(f"round {r + 1}: {engine}: {got}", file=sys.stderr)
    pt = runs["pytorch"]
    lines = [
        "# Text generation: edgeai vs transformers generate (PyTorch eager, KV cache)", "",
        f"Command: `python benchmarks/generate.py --rounds {args.rounds} --prompt-tokens {args.prompt_tokens} "
        f"--new-tokens {args.new_tokens}`  ",
        _report.machine_line(str(THREADS)),
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
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
