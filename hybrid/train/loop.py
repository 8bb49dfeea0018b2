"""The training loop behind ``hybrid train`` and ``hybrid.train.run_training``.

One code path for CPU, one GPU and ``torchrun`` (DDP, or FSDP2 with ``train.parallel: fsdp``): AdamW (decay on matrices only, see
``schedule.py``), warmup + cosine, bf16 autocast on GPU, gradient clipping and accumulation, optional
``torch.compile``, periodic held-out loss, a tqdm progress bar with loss / tokens/s / MFU, metrics in
``metrics.jsonl``, atomic resumable checkpoints, a loss-curve PNG, and a ``from_pretrained``-ready
output folder.

Output folder (``--out``)::

    config.json, model.safetensors   final weights (HybridForCausalLM.from_pretrained(out))
    tokenizer.json, ...              the tokenizer, for text and ruler_mix data
    recipe.json, train_config.json   what was trained, after overrides
    metrics.jsonl, loss_curve.png, summary.json
    checkpoints/step_N, checkpoints/latest
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from hybrid.errors import HybridError
from hybrid.train.batches import Batch
from hybrid.train.checkpoint import CheckpointError, find_latest, load_verified, save_checkpoint
from hybrid.train.config import TrainConfig
from hybrid.train.distributed import Dist, setup
from hybrid.train.heartbeat import Heartbeat
from hybrid.train.metrics import MetricsLog, flops_per_token, peak_flops, plot_loss
from hybrid.train.runlock import RunLock, RunLockError
from hybrid.train.schedule import make_scheduler, param_groups
from hybrid.train.sharding import checkpoint_blocks, full_state_dict, grad_norm, shard_blocks


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/Inf; the checkpoints saved so far are kept."""


class ResumeMismatch(HybridError):
    """``--resume`` with train settings that differ from the checkpoint's in keys that change the run."""


def compare_for_resume(saved: dict, new: dict) -> tuple[list[str], list[str]]:
    """(changes to keys a resume may change, changes to any other key), each as ``key: old -> new``."""
    allowed, refused = [], []
    for key in sorted(set(saved) | set(new)):
        old, now = saved.get(key), new.get(key)
        if old == now:
            continue
        line = f"{key}: {json.dumps(old)} -> {json.dumps(now)}"
        (allowed if key in TrainConfig.CHANGEABLE else refused).append(line)
    return allowed, refused


@dataclass
class TrainResult:
    recipe: str
    out_dir: str
    steps: int
    final_loss: float | None
    eval_loss: float | None
    tokens_per_s: float
    wall_time_s: float
    tokens_seen: int
    interrupted: bool = False
    flops_per_token: float = 0.0
    flops_source: str = ""
    mfu: float | None = None
    baselines: dict = field(default_factory=dict)
    checkpoint: str | None = None
    metrics_path: str = ""
    plot_path: str | None = None
    model_path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# building blocks


def _load_recipe(recipe, overrides):
    from hybrid.recipes import load_recipe, recipe_from_dict

    if isinstance(recipe, (str, Path)):
        return load_recipe(str(recipe), overrides=list(overrides or []))
    if overrides:
        src = copy.deepcopy(recipe.source)
        src.pop("extends", None)
        return recipe_from_dict(src, recipe.path, overrides=list(overrides))
    return recipe


def _needs_tokenizer(cfg: TrainConfig) -> bool:
    return cfg.data.kind in ("text", "ruler_mix")


def make_source(cfg: TrainConfig, *, vocab_size: int, tokenizer, rank: int, world_size: int):
    d = cfg.data
    if d.kind == "assoc_recall":
        from hybrid.train.mqar import MQARSource

        V = d.vocab_size or vocab_size
        if V > vocab_size:
            raise ValueError(f"train.data.vocab_size={V} exceeds the model's vocab_size={vocab_size}")
        return MQARSource(vocab_size=V, seq_len=cfg.seq_len, batch_size=cfg.batch_size, num_kv_pairs=d.num_kv_pairs,
                          power_a=d.power_a, random_non_queries=d.random_non_queries, seed=cfg.seed, rank=rank)
    if d.kind == "text":
        from hybrid.train.text_source import TextSource

        return TextSource(tokenizer=tokenizer, files=d.files, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                          grad_accum=cfg.grad_accum, val_fraction=d.val_fraction, seed=cfg.seed, rank=rank,
                          world_size=world_size)
    from hybrid.train.ruler_source import RulerSource

    return RulerSource(tokenizer=tokenizer, tasks=d.tasks, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                       loss_on=d.loss_on, doc_len_warmup=d.doc_len_warmup, followups=d.followups,
                       weights=d.weights, pack=d.pack, seed=cfg.seed, rank=rank, world_size=world_size)


def _loss_and_logits(out):
    if isinstance(out, dict) or hasattr(out, "loss"):
        return out["loss"] if isinstance(out, dict) else out.loss, getattr(out, "logits", None)
    if isinstance(out, (tuple, list)):
        return out[0], out[1] if len(out) > 1 else None
    raise TypeError(f"the model returned {type(out).__name__}; expected an output with .loss")


def _forward(model, batch: Batch, *, at_targets: bool = False):
    """(loss, logits) of one batch; ``at_targets``: our model applies its output head only where a
    target is (same loss and gradients, no logits), which the training steps use."""
    kwargs = {"labels": batch.labels}
    if at_targets:
        kwargs["logits_at_targets"] = True
    if batch.cu_seqlens is not None:
        kwargs["cu_seqlens"] = batch.cu_seqlens
    return _loss_and_logits(model(batch.input_ids, **kwargs))


def _accuracy(logits, labels) -> tuple[int, int]:
    if logits is None:
        return 0, 0
    pred = logits[:, :-1].argmax(-1)
    tgt = labels[:, 1:]
    mask = tgt != -100
    return int((pred[mask] == tgt[mask]).sum()), int(mask.sum())


class _StopFlag:
    """First Ctrl-C (SIGINT) / SIGTERM asks the loop to save and stop after the current step; a second
    Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: no handler, Ctrl-C stays a KeyboardInterrupt
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _autocast(dev: torch.device, cfg: TrainConfig):
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and dev.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16), True
    return contextlib.nullcontext, False


def evaluate(model, source, n_batches: int, dev: torch.device, autocast, dist_: Dist) -> dict:
    """Held-out loss (token-weighted mean over ``n_batches`` micro-batches) and next-token accuracy on
    the labelled positions; for sources that mark answer tokens (ruler_mix), also the next-token
    accuracy on the answers alone (``eval_answer_acc``), which is the retrieval signal when the loss is
    on every token."""
    was_training = model.training
    model.eval()
    tot, n, correct, counted, a_right, a_count = 0.0, 0, 0, 0, 0, 0
    with torch.no_grad():
        for i in range(n_batches):
            b = source.eval_batch(i)
            if b is None:
                break
            b = b.to(dev)
            with autocast():
                loss, logits = _forward(model, b)
            k = b.num_targets
            tot += float(loss) * k
            n += k
            c, m = _accuracy(logits, b.labels)
            correct += c
            counted += m
            if b.answer_labels is not None:
                c, m = _accuracy(logits, b.answer_labels)
                a_right += c
                a_count += m
    tot, n, correct, counted, a_right, a_count = dist_.all_reduce_sum([tot, n, correct, counted, a_right, a_count])
    model.train(was_training)
    if n == 0:
        return {"eval_loss": None, "eval_acc": None}
    out = {"eval_loss": tot / n, "eval_acc": (correct / counted) if counted else None}
    if a_count:
        out["eval_answer_acc"] = a_right / a_count
    return out


# ---------------------------------------------------------------------------------------------------
# the loop


def run_training(recipe, out_dir, *, steps: int | None = None, device: str | None = None,
                 overrides: list[str] | None = None, progress: bool = True, resume: bool = False,
                 allow_changes: bool = False, _save_hook=None, _stop_after: int | None = None) -> TrainResult:
    """Train ``recipe`` (a path or a ``Recipe``) into ``out_dir``.

    ``steps`` overrides ``train.steps``; ``overrides`` are recipe ``key=value`` strings
    (``"train.lr=1e-3"``); ``resume`` continues from the newest verified checkpoint under
    ``out_dir/checkpoints`` (a damaged one is skipped, and said so); train settings other than
    ``TrainConfig.CHANGEABLE`` must match the checkpoint's unless ``allow_changes``. ``progress``: a
    bar on a terminal, else a one-line heartbeat every ``train.heartbeat_every`` steps; False: only the
    heartbeat. Raises ``TrainingDiverged`` on a NaN/Inf loss (the checkpoints stay),
    ``FileExistsError`` when ``out_dir`` already holds a checkpoint and ``resume`` is false,
    ``RunLockError`` when another run writes ``out_dir``. Works under ``torchrun`` (DDP)."""
    overrides = list(overrides or [])
    if steps is not None:
        overrides.append(f"train.steps={int(steps)}")
    rec = _load_recipe(recipe, overrides)
    cfg = TrainConfig.from_dict(rec.train)
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    dist_ = setup(device)
    lock = RunLock(out)
    try:
        refused = None
        if dist_.is_main:
            try:
                lock.acquire()
            except (RunLockError, OSError) as e:
                refused = e
        if dist_.any(refused is not None):  # every rank stops, not only the one that holds the error
            raise refused if refused is not None else RunLockError(f"{out}: rank 0 could not take the lock")
        return _run(rec, cfg, out, ckpt_root, dist_, progress=progress, resume=resume,
                    allow_changes=allow_changes, save_hook=_save_hook, stop_after=_stop_after)
    finally:
        lock.release()
        dist_.close()


def _build_model(rec, cfg: TrainConfig, tokenizer):
    from hybrid.blocks import HybridConfig, HybridForCausalLM

    kwargs = rec.model_config_kwargs()
    if tokenizer is not None:
        need = len(tokenizer)
        if kwargs["vocab_size"] < need:
            raise ValueError(f"model.vocab_size={kwargs['vocab_size']} is smaller than the tokenizer's {need} "
                             "tokens; raise model.vocab_size or use a smaller tokenizer")
        kwargs.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(cfg.seed)
    try:
        config = HybridConfig(**kwargs)
    except TypeError:  # a config without token-id fields
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            kwargs.pop(k, None)
        config = HybridConfig(**kwargs)
    return HybridForCausalLM(config)


def _run(rec, cfg: TrainConfig, out: Path, ckpt_root: Path, dist_: Dist, *, progress: bool, resume: bool,
         allow_changes: bool, save_hook, stop_after):
    dev = dist_.device
    main = dist_.is_main
    latest = find_latest(ckpt_root)
    if latest is not None and not resume:
        raise FileExistsError(f"{out} already holds a checkpoint ({latest.name}); pass --resume to continue it, "
                              "or choose another --out")
    if resume and latest is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {ckpt_root}")
    if main:
        out.mkdir(parents=True, exist_ok=True)

    tokenizer = None
    if _needs_tokenizer(cfg):
        from hybrid.train.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.data.tokenizer)
    model = _build_model(rec, cfg, tokenizer)
    vocab = model.config.vocab_size
    source = make_source(cfg, vocab_size=vocab, tokenizer=tokenizer, rank=dist_.rank, world_size=dist_.world_size)
    from hybrid.train.prefetch import Prefetcher, auto_workers

    workers = cfg.data_workers if cfg.data_workers is not None else auto_workers(
        cfg.data.kind, dev.type, dist_.world_size)
    prefetch = Prefetcher(source, steps=cfg.steps, accum=cfg.grad_accum, workers=workers)  # spawned workers
    try:
        return _train(rec, cfg, out, ckpt_root, dist_, model, source, prefetch, tokenizer, latest,
                      progress=progress, resume=resume, allow_changes=allow_changes, save_hook=save_hook,
                      stop_after=stop_after)
    finally:
        prefetch.close()


def _train(rec, cfg, out, ckpt_root, dist_, model, source, prefetch, tokenizer, latest, *, progress, resume,
           allow_changes, save_hook, stop_after):
    dev = dist_.device
    main = dist_.is_main
    model.to(dev)
    raw_model = model
    autocast, bf16 = _autocast(dev, cfg)
    if cfg.checkpoint_blocks:
        checkpoint_blocks(raw_model, cfg.checkpoint_blocks)
    fsdp = cfg.parallel == "fsdp" and dist_.enabled
    if fsdp:  # before the optimizer: the parameters become DTensor shards
        shard_blocks(raw_model, dev, dist_.world_size, bf16=bf16)
    groups, (decay_names, no_decay_names) = param_groups(raw_model, cfg.weight_decay, cfg.decay_embeddings)
    fused = {"fused": True} if dev.type == "cuda" else {}
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=1e-8, **fused)
    scheduler = make_scheduler(optimizer, steps=cfg.steps, warmup_steps=cfg.warmup_steps,
                               min_lr_ratio=cfg.min_lr_ratio)

    start_step, tokens_seen, wall_before = 0, 0, 0.0
    resume_changes: list[str] = []
    if resume:
        log = print if main else (lambda *a, **k: None)
        # hyperparameters come from the current config (they equal the checkpoint's unless
        # --allow-changes); the optimizer's moments and the schedule position from the checkpoint
        fresh = [{"lr": g["initial_lr"], "betas": g["betas"], "weight_decay": g["weight_decay"]}
                 for g in optimizer.param_groups]
        latest, state = load_verified(ckpt_root, model=raw_model, optimizer=optimizer, rank=dist_.rank, log=log)
        saved_model = state.get("model_config")
        if saved_model is not None and saved_model != _jsonable(rec.model_config_kwargs()):
            raise CheckpointError(f"{latest}: made from a different model (the recipe's model or layout "
                                  "changed); resume with the original recipe or use a new --out")
        allowed, refused = compare_for_resume(state.get("train_config") or {}, cfg.to_dict())
        if refused and not allow_changes:
            raise ResumeMismatch(f"--resume: the train settings differ from {latest.name}'s: "
                                 f"{'; '.join(refused)}; restore them, or pass --allow-changes to continue "
                                 "with the new values")
        resume_changes = sorted(allowed + refused)
        scheduler.load_state_dict(state["scheduler"])
        # steps may be raised on resume; keep the schedule consistent with the new total
        scheduler.lr_lambdas[0] = make_scheduler(optimizer, steps=cfg.steps, warmup_steps=cfg.warmup_steps,
                                                 min_lr_ratio=cfg.min_lr_ratio).lr_lambdas[0]
        scheduler.base_lrs = [f["lr"] for f in fresh]
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
        for g, f in zip(optimizer.param_groups, fresh):
            g.update(betas=f["betas"], weight_decay=f["weight_decay"], initial_lr=f["lr"], lr=f["lr"] * factor)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        start_step, tokens_seen = state["step"], state["tokens_seen"]
        wall_before = state.get("wall_time_s", 0.0)
        if main:
            changed = f"; changed: {'; '.join(resume_changes)}" if resume_changes else ""
            print(f"resuming from step {start_step} ({latest}){changed}", flush=True)
        if start_step >= cfg.steps and main:
            print(f"checkpoint {latest.name} is already at step {start_step} >= train.steps={cfg.steps}")

    fwd_model = torch.compile(raw_model) if cfg.compile else raw_model
    from hybrid.blocks import HybridForCausalLM

    # the head only at the targets: a boolean gather whose size changes every batch, which a compiled
    # model would recompile for, so only eagerly
    heads_at_targets = isinstance(raw_model, HybridForCausalLM) and not cfg.compile
    if dist_.enabled and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd_model = DDP(fwd_model, device_ids=[dev.index] if dev.type == "cuda" else None)

    fpt, fpt_source = flops_per_token(raw_model, rec, cfg.seq_len)
    peak = peak_flops(dev, bf16)
    baselines = source.baselines() if main else {}
    metrics = MetricsLog(out / "metrics.jsonl", resume_step=start_step if resume else None, enabled=main)
    if resume:
        metrics.write({"kind": "resume", "step": start_step, "checkpoint": latest.name, "changes": resume_changes})
    n_params = sum(p.numel() for p in raw_model.parameters())
    if main:
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        (out / "recipe.json").write_text(json.dumps(_jsonable(rec.source), indent=2) + "\n")
        if progress:
            print(f"recipe {rec.name}: {rec.letters}, {n_params / 1e6:.2f}M parameters, device {dev}"
                  f"{f' x{dist_.world_size} ({cfg.parallel.upper()})' if dist_.enabled else ''}, "
                  f"{'bf16 autocast' if bf16 else 'fp32'}{', compiled' if cfg.compile else ''}")
            print(f"data: {source.describe()}")
            for k, v in baselines.items():
                if "nats" in k:
                    print(f"baseline {k.replace('_', ' ')}: {v:.4f}")
            print(f"optimizer: AdamW lr {cfg.lr:g}, decay {cfg.weight_decay:g} on {len(decay_names)} tensors, "
                  f"none on {len(no_decay_names)}; FLOPs/token {fpt:.3g} ({fpt_source})")

    def trainer_state(step: int, wall: float) -> dict:
        return {"step": step, "tokens_seen": tokens_seen, "scheduler": scheduler.state_dict(),
                "wall_time_s": wall, "world_size": dist_.world_size, "train_config": cfg.to_dict(),
                "model_config": _jsonable(rec.model_config_kwargs()), "recipe": rec.name,
                "data_position": {"kind": cfg.data.kind, "next_step": step, "seed": cfg.seed}}

    def save(step: int, wall: float) -> Path:
        try:
            return save_checkpoint(ckpt_root, step, model=raw_model, optimizer=optimizer,
                                   trainer_state=trainer_state(step, wall), rank=dist_.rank,
                                   keep=cfg.keep_checkpoints, barrier=dist_.barrier if dist_.enabled else None,
                                   sharded=cfg.parallel == "fsdp", _write_hook=save_hook)
        except OSError as e:
            kept = f"{last_ckpt} is intact" if last_ckpt else "no earlier checkpoint exists"
            what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
            raise CheckpointError(f"cannot write checkpoint step {step} in {ckpt_root}: {what}; {kept}; fix "
                                  "the folder (space, permissions), then --resume") from None

    bar = None
    heartbeat = None
    if main:
        import sys

        if progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start_step, desc=rec.name, unit="step", dynamic_ncols=True)
        elif cfg.heartbeat_every:
            heartbeat = Heartbeat(total=cfg.steps, start=start_step, every=cfg.heartbeat_every)

    fwd_model.train()
    t_start = time.perf_counter()
    t_window, tok_window = time.perf_counter(), 0
    last_loss, last_eval, last_ckpt, interrupted = None, None, latest, False
    last_answer_acc = None
    tok_per_s, mfu = 0.0, None
    step = start_step
    with _StopFlag() as stop:
        while step < cfg.steps:
            micro = [prefetch.get(step, m) for m in range(cfg.grad_accum)]
            n_targets = sum(b.num_targets for b in micro)
            # weight every micro-batch by its share of the global target count, so the gradient is the
            # token-mean over all ranks and micro-batches (DDP then averages: hence the world factor)
            n_global = dist_.all_reduce_sum([n_targets])[0] if dist_.enabled else n_targets
            loss_sum = 0.0
            for m, b in enumerate(micro):
                b = b.to(dev)
                sync = (m == cfg.grad_accum - 1) or not dist_.enabled
                if fsdp:
                    raw_model.set_requires_gradient_sync(sync)
                ctx = contextlib.nullcontext() if sync or fsdp else fwd_model.no_sync()
                with ctx:
                    with autocast():
                        loss, _ = _forward(fwd_model, b, at_targets=heads_at_targets)
                    (loss * (b.num_targets * dist_.world_size / max(n_global, 1))).backward()
                loss_sum += float(loss.detach()) * b.num_targets
                tok_window += b.num_tokens * dist_.world_size
                tokens_seen += b.num_tokens * dist_.world_size
            local_loss = loss_sum / max(n_targets, 1)
            if fsdp:
                gnorm = grad_norm(raw_model, cfg.grad_clip)
            elif cfg.grad_clip > 0:
                gnorm = float(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip))
            else:
                gnorm = float(torch.linalg.vector_norm(torch.stack(
                    [p.grad.detach().float().norm() for p in raw_model.parameters() if p.grad is not None])))
            bad = dist_.any(not (math.isfinite(local_loss) and math.isfinite(gnorm)))
            if bad:
                if bar:
                    bar.close()
                where = (f"; the newest checkpoint is {last_ckpt} (weights finite when saved)" if last_ckpt
                         else "; no checkpoint was saved")
                metrics.write({"kind": "error", "step": step + 1, "loss": local_loss, "grad_norm": gnorm})
                if resume and step == start_step:
                    todo = (f"it is the first step after resuming from {last_ckpt}: resume from an earlier "
                            "checkpoint, or retrain if the data or settings changed")
                else:
                    todo = (f"lower train.lr (now {cfg.lr:g}), keep train.grad_clip > 0, or use dtype fp32 to "
                            "find the cause")
                raise TrainingDiverged(f"loss became {local_loss} (grad norm {gnorm}) at step {step + 1}{where}; "
                                       f"{todo}")
            lr_now = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = local_loss

            if step % cfg.log_every == 0 or step == cfg.steps or step == start_step + 1:
                (loss_all, n_all) = dist_.all_reduce_sum([loss_sum, n_targets])
                last_loss = loss_all / max(n_all, 1)
                dt = time.perf_counter() - t_window
                tok_per_s = tok_window / max(dt, 1e-9)
                mfu = (fpt * tok_per_s / (peak * dist_.world_size)) if peak else None
                t_window, tok_window = time.perf_counter(), 0
                wall = wall_before + time.perf_counter() - t_start
                rec_line = {"kind": "train", "step": step, "loss": last_loss, "lr": lr_now, "grad_norm": gnorm,
                            "tokens": tokens_seen, "tok_per_s": tok_per_s, "mfu": mfu, "wall_s": wall}
                if hasattr(source, "epoch_of"):
                    rec_line["epoch"] = source.epoch_of(step - 1)
                metrics.write(rec_line)
                if bar:
                    post = {"loss": f"{last_loss:.4f}", "tok/s": f"{tok_per_s:,.0f}"}
                    if mfu is not None:
                        post["mfu"] = f"{100 * mfu:.1f}%"
                    if last_eval is not None:
                        post["eval"] = f"{last_eval:.4f}"
                    if last_answer_acc is not None:
                        post["ans"] = f"{100 * last_answer_acc:.0f}%"
                    bar.set_postfix(post, refresh=False)
            if bar:
                bar.update(1)
            if heartbeat:
                heartbeat.beat(step, last_loss, tok_per_s,
                               f"  eval {last_eval:.4f}" if last_eval is not None else "")

            if cfg.eval_every and (step % cfg.eval_every == 0) and step < cfg.steps:
                ev = evaluate(fwd_model, source, cfg.eval_batches, dev, autocast, dist_)
                last_eval = ev["eval_loss"]
                last_answer_acc = ev.get("eval_answer_acc")
                metrics.write({"kind": "eval", "step": step, **ev})
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                last_ckpt = save(step, wall_before + time.perf_counter() - t_start)
            if stop_after is not None and step >= stop_after:
                stop.requested = True
            if dist_.any(stop.requested) and step < cfg.steps:
                interrupted = True
                break
    if bar:
        bar.close()

    wall = wall_before + time.perf_counter() - t_start
    ev = {"eval_loss": None, "eval_acc": None}
    if not interrupted and cfg.eval_batches > 0:
        ev = evaluate(fwd_model, source, cfg.eval_batches, dev, autocast, dist_)
        metrics.write({"kind": "eval", "step": step, **ev})
    already = last_ckpt is not None and Path(last_ckpt).name == f"step_{step:06d}"
    if (step > start_step or latest is None) and not already:
        last_ckpt = save(step, wall)
    plot_path, model_path = None, str(out)
    whole = full_state_dict(raw_model) if fsdp and not interrupted else None  # every rank gathers
    if main:
        if interrupted:
            print(f"\nstopped at step {step}: checkpoint saved in {last_ckpt}; continue with --resume")
        else:
            _save_pretrained_quietly(raw_model, out, whole)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(out))
        plot_path = plot_loss(metrics.read(), out / "loss_curve.png",
                              f"{rec.name} ({rec.letters}) - {cfg.data.kind}", baselines)
    avg_tps = (tokens_seen / wall) if wall > 0 else 0.0
    result = TrainResult(
        recipe=rec.name, out_dir=str(out), steps=step, final_loss=last_loss, eval_loss=ev["eval_loss"],
        tokens_per_s=avg_tps, wall_time_s=wall, tokens_seen=tokens_seen, interrupted=interrupted,
        flops_per_token=fpt, flops_source=fpt_source,
        mfu=(fpt * avg_tps / (peak * dist_.world_size)) if peak else None, baselines=_jsonable(baselines),
        checkpoint=str(last_ckpt) if last_ckpt else None, metrics_path=str(out / "metrics.jsonl"),
        plot_path=str(plot_path) if plot_path else None, model_path=model_path)
    if main:
        summary = result.to_dict()
        summary["eval_acc"] = ev.get("eval_acc")
        if ev.get("eval_answer_acc") is not None:
            summary["eval_answer_acc"] = ev["eval_answer_acc"]
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _save_pretrained_quietly(model, out: Path, state_dict: dict | None = None) -> None:
    """``save_pretrained`` without transformers' own progress bar."""
    try:
        from transformers.utils import logging as hf_logging

        was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    except ImportError:
        hf_logging, was = None, False
    try:
        model.save_pretrained(str(out), **({"state_dict": state_dict} if state_dict is not None else {}))
    finally:
        if hf_logging is not None and was:
            hf_logging.enable_progress_bar()


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))
