"""`tuneforge export RUN`: merge a tuned adapter into its base and write deployable files."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuneforge.cli.common import flag, overrides_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="Merge a tuned run into standalone weights (safetensors, int8, GGUF).",
        description="Merge a run's LoRA adapter into its base model and save a standard Hugging Face folder "
        "that AutoModelForCausalLM loads. The merged model's logits are checked against base+adapter "
        "before it is accepted. Optionally also write an int8 copy for CPU serving and a GGUF file for "
        "llama.cpp-family runtimes. Prints a size table (adapter vs merged vs base).",
        epilog="examples:\n  tuneforge export runs/lora\n"
        "  tuneforge export runs/lora --int8 --gguf q8_0\n"
        "  tuneforge export runs/lora --dtype bfloat16 --out dist/lora-merged\n"
        "  tuneforge export runs/lora --for vllm      # adapter + serve.sh for vLLM\n"
        "  python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('runs/lora/export/merged')\"",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="Run folder written by `tuneforge train` (holds recipe.yaml and adapter/ or model/).")
    p.add_argument(
        "--set", "-s", action="append", default=[], metavar="KEY=VALUE",
        help="Override any recipe field, e.g. --set export.tolerance=1e-3 (repeatable).",
    )
    flag(p, "--out", "export.output_dir", help="Output folder (default <run>/export).")
    flag(p, "--dtype", "export.dtype", choices=["float32", "bfloat16", "float16"], help="Dtype of the merged weights.")
    flag(p, "--tolerance", "export.tolerance", type=float, help="Allowed relative logit difference after merging.")
    flag(p, "--int8", "export.int8", action="store_const", const=True, help="Also write an int8 copy for CPU serving.")
    flag(p, "--for", "export.engine", choices=["transformers", "vllm"],
         help="vllm: keep a LoRA adapter vLLM can serve as an adapter (merge anything else) and write serve.sh.")
    flag(p, "--gguf", "export.gguf", choices=["f32", "f16", "q8_0"], help="Also write a GGUF file of this type.")
    flag(p, "--trust-remote-code", "model.trust_remote_code", action="store_const", const=True,
         help="Let the base model folder run its own Python code (never taken from the run folder's recipe).")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from tuneforge.export.pipeline import export_run, size_table
    from tuneforge.runs import open_run

    # The run's recipe with the command line's overrides; trust_remote_code only from the command line.
    with open_run(args.run, overrides_from_args(args)).hold() as run:  # <run>/export: one writer at a time
        if run.recipe.export.engine == "vllm":
            return _print_vllm(run)
        report = export_run(run)
    check = report["merge_check"]
    print(f"merged model: {report['output_dir']}/merged")
    print(f"  logit check vs base+adapter: max |diff| {check['max_abs_diff']:.2e} "
          f"(relative {check['max_rel_diff']:.2e} <= {report['tolerance']:.0e}), top-1 agreement {check['top1_agreement']:.1%}")
    if "adapter_effect" in report and report["adapter_effect"]["max_abs_diff"] == 0:
        print("  warning: the adapter does not change the base model's logits at all (untrained adapter?)")
    if "int8_check" in report:
        c = report["int8_check"]
        print(f"int8 copy: {report['output_dir']}/merged-int8  (max |diff| {c['max_abs_diff']:.2e}, "
              f"top-1 agreement {c['top1_agreement']:.1%})")
    if "gguf" in report:
        c = report["gguf_check"]
        print(f"gguf: {report['gguf']['path']}  (reloaded: max |diff| {c['max_abs_diff']:.2e}, top-1 agreement "
              f"{c['top1_agreement']:.1%}, tokenization agreement {c['tokenization_agreement']:.0%})")
    print()
    print(size_table(report["sizes_bytes"]))
    return 0


def _print_vllm(run) -> int:
    from tuneforge.export.vllm import export_run_for_vllm

    report = export_run_for_vllm(run)
    out = Path(report["path"]).parent
    if report["kind"] == "adapter":
        print(f"vLLM adapter: {report['path']} (served beside its base; --max-lora-rank {report['max_lora_rank']})")
    else:
        print(f"vLLM model: {report['path']} (merged: {'; '.join(report.get('problems') or ['full fine-tuning'])})")
        check = report["merge_check"]
        print(f"  logit check vs base+adapter: relative {check['max_rel_diff']:.2e}, top-1 agreement "
              f"{check['top1_agreement']:.1%}")
    print(f"serve it: {out / 'serve.sh'}   ({' '.join(report['command'])})")
    print(f"how to add adapters while vLLM runs: {out / 'README.md'}")
    return 0
