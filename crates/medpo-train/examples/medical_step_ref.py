#!/usr/bin/env python
"""The Python side of the medical-objective step benchmark: one mDPO optimizer step (DPO + CoPO + anchor, three
sequences per pair) written with transformers / PEFT / torch primitives the way TRL's DPOTrainer runs DPO, on the
workload of ../shared/bench/hf_reference.py. `dpo_step_bench.rs --objective mdpo` runs the same step in medpo and
compares.

  PY=target/bench-venv/bin/python     # ../shared/bench/README.md's venv recipe
  $PY crates/medpo-train/examples/medical_step_ref.py target/medium-fixture/llava-hf-tiny \
      --threads 2 --json target/ref-medium-mdpo.json --image-dir target/mdpo-images

Workload: B = 4 pairs; pair i = hf_reference.py's PAIRS[i] on the scan transformed by TRANSFORMS[i]; its corrupted
image (mDPO's m~) is that image with its central half (width and height) replaced by uniform noise from
numpy.random.RandomState(i), written as PNG into --image-dir so that medpo reads the very same pixels. One step, as
TRL's concatenated forward: the policy forward + backward on [chosen on image; rejected on image; chosen on corrupted
image] (3B right-padded sequences, one image copy each, log-probs from the completion positions only via
`logits_to_keep`), the reference forward on the same 3B sequences (full: a frozen copy; LoRA: adapters disabled),
loss = mean(-log s(b h) - log s(b[(pc-rc) - (pcc-rcc)]) - log s(b(pc-rc))) with b = 0.1, grad-norm clip 1.0, fused
AdamW (lr 1e-6, no weight decay), zero_grad. The vision tower is frozen in both variants (as hf_reference.py's DPO).
Each variant runs in a fresh process (its own peak RSS). 1 untimed warm-up step, then the median of 5.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def bench_module(bench_dir: str):
    sys.path.insert(0, bench_dir)
    import hf_reference  # noqa: E402  (../shared/bench/hf_reference.py: workload, PAIRS, TRANSFORMS, helpers)
    return hf_reference


def write_images(spec, hr, out: Path) -> list[dict]:
    import numpy as np
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, img in enumerate(hr.load_images(spec)):
        a = np.array(img)
        h, w = a.shape[:2]
        y0, x0 = h // 4, w // 4
        a[y0:y0 + h // 2, x0:x0 + w // 2] = np.random.RandomState(i).randint(0, 256, (h // 2, w // 2, 3), dtype=np.uint8)
        clean, corrupt = f"image{i}.png", f"corrupt{i}.png"
        img.save(out / clean)
        Image.fromarray(a).save(out / corrupt)
        rows.append({"image": clean, "corrupt": corrupt})
    return rows


def run_step(spec, bench_dir, image_dir, lora):
    hr = bench_module(bench_dir)
    torch = hr.setup_child(spec)
    import torch.nn.functional as F
    from PIL import Image
    from transformers import LlavaProcessor
    s, d = spec["settings"], spec["workload"]["dpo"]
    rss_base = hr.rss_mib()
    proc = LlavaProcessor.from_pretrained(spec["model_dir"], backend="pil")
    pairs, files = d["pairs"], spec["mdpo_images"]
    B, beta, prompt_ids, pad = len(pairs), d["beta"], spec["workload"]["prompt_ids"], spec["workload"]["pad_token_id"]
    P = len(prompt_ids)
    # rows: chosen on image, rejected on image, chosen on corrupted image
    rows = [(p["chosen_ids"], files[i]["image"]) for i, p in enumerate(pairs)]
    rows += [(p["rejected_ids"], files[i]["image"]) for i, p in enumerate(pairs)]
    rows += [(p["chosen_ids"], files[i]["corrupt"]) for i, p in enumerate(pairs)]
    T = P + max(len(a) for a, _ in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    targets = torch.zeros((len(rows), T - P), dtype=torch.long)
    tmask = torch.zeros((len(rows), T - P))
    for r, (a, _) in enumerate(rows):
        ids[r, :P + len(a)] = torch.tensor(prompt_ids + a)
        mask[r, :P + len(a)] = 1
        targets[r, :len(a)] = torch.tensor(a)
        tmask[r, :len(a)] = 1
    images = [Image.open(Path(image_dir) / f).convert("RGB") for _, f in rows]
    pixel_values = proc.image_processor(images=images, return_tensors="pt")["pixel_values"]
    keep = torch.arange(P - 1, T - 1)  # the positions that predict completion tokens

    t0 = time.perf_counter()
    model = hr.load_model(spec)
    model.model.vision_tower.requires_grad_(False)
    if lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                 target_modules=hr.LORA_TARGETS))
        ref = None
    else:
        ref = hr.load_model(spec)
        ref.requires_grad_(False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True)
    setup_s, rss_setup = time.perf_counter() - t0, hr.rss_mib()

    def logps(m):
        logits = m(input_ids=ids, attention_mask=mask, pixel_values=pixel_values, logits_to_keep=keep).logits
        lp = torch.gather(F.log_softmax(logits.float(), -1), 2, targets.unsqueeze(2)).squeeze(2)
        return (lp * tmask).sum(1)

    def step():
        pol = logps(model)
        with torch.no_grad():
            if lora:
                with model.disable_adapter():
                    refl = logps(model)
            else:
                refl = logps(ref)
        pc, pr, pcc = pol[:B], pol[B:2 * B], pol[2 * B:]
        rc, rr, rcc = refl[:B], refl[B:2 * B], refl[2 * B:]
        xc = pc - rc
        dpo = -F.logsigmoid(beta * (xc - (pr - rr)))
        copo = -F.logsigmoid(beta * (xc - (pcc - rcc)))
        anchor = -F.logsigmoid(beta * xc)
        loss = (dpo + copo + anchor).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {"loss": loss.item(), "grad_norm": gn.item(), "logps/chosen": pc.mean().item(),
                "logps/rejected": pr.mean().item(), "logps/chosen_corrupt": pcc.mean().item()}

    times, first = [], None
    for _ in range(s["dpo_warmup"] + s["dpo_steps"]):
        t = time.perf_counter()
        m = step()
        times.append(time.perf_counter() - t)
        first = first or m
    step_s = times[s["dpo_warmup"]:]
    return {
        "torch_threads": torch.get_num_threads(), **hr.stats(step_s, 1.0, "s"),
        "pairs_per_s": B / statistics.median(step_s), "warmup_steps_s": times[:s["dpo_warmup"]],
        "setup_s": setup_s, "rss_after_imports_mib": rss_base, "rss_after_setup_mib": rss_setup,
        "peak_rss_mib": hr.peak_rss_mib(), "trainable_params": sum(p.numel() for p in params),
        "sequences_per_step": len(rows), "padded_len": T, "step1": first,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--bench-dir", default=str(REPO.parent / "shared" / "bench"), help="hf_reference.py's folder")
    ap.add_argument("--image-dir", type=Path, default=REPO / "target" / "mdpo-images",
                    help="where the clean and corrupted PNGs are written (medpo reads them from here)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--only", default="mdpo_full,mdpo_lora")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    hr = bench_module(a.bench_dir)
    ns = argparse.Namespace(model_dir=a.model_dir, prompt=None, image=None, batch=4, attn="sdpa", threads=a.threads,
                            runs=1, warmup=1, dpo_steps=a.steps, dpo_warmup=a.warmup, gradient_checkpointing=False,
                            new_tokens=1)
    spec = hr.in_fresh_process(hr.build_spec, ns)
    spec["mdpo_images"] = write_images(spec, hr, a.image_dir)
    out = {"tool": "crates/medpo-train/examples/medical_step_ref.py", "versions": spec["versions"],
           "model_dir": spec["model_dir"], "image_dir": str(a.image_dir.resolve()), "settings": spec["settings"],
           "workload": {"dpo": spec["workload"]["dpo"], "prompt_ids": spec["workload"]["prompt_ids"],
                        "images": spec["mdpo_images"], "objective": "mdpo (sigmoid DPO + CoPO + anchor, delta 0)"},
           "results": {}}
    for name in a.only.split(","):
        t = time.perf_counter()
        out["results"][name] = hr.in_fresh_process(run_step, spec, a.bench_dir, str(a.image_dir), name.endswith("lora"))
        r = out["results"][name]
        print(f"[{name}: {time.perf_counter() - t:.1f} s] median {r['median_s']:.4f} s/step, peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB, step 1 {r['step1']}", file=sys.stderr)
    text = json.dumps(out, indent=1)
    if a.json:
        a.json.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
