"""Offline multi-teacher distillation in plain PyTorch: the reference mtkd is measured against.

This loop does the math of `mtkd run` with `distill.recipe: offline` and `distill.aggregator: mean`
(Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015, arXiv:1503.02531;
the mean of the teachers' softened probabilities as in You et al., KDD 2017), without the library's
checks, checkpoints, logging or caching. `mtkd bench` times the library against the same loop.

    python examples/minimal_distill.py            # about a minute on one CPU thread
"""
import argparse
import math

import torch
import torch.nn.functional as F


def distill(student, teachers, loader, steps, temperature=4.0, alpha=0.9, lr=1e-2):
    """Train `student` on batches (x, y) from `loader` (label -1 = unlabeled) for `steps` steps."""
    for teacher in teachers:
        teacher.eval().requires_grad_(False)  # frozen: eval mode, no gradients, not in the optimizer
    student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    cosine = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    T, step = temperature, 0
    while step < steps:
        for x, y in loader:  # a new pass over the data whenever it runs out
            with torch.no_grad():
                logits = torch.stack([teacher(x) for teacher in teachers])  # [K, B, C]
                target = torch.softmax(logits / T, dim=-1).mean(0)  # [B, C]: the mean of the softened teachers
            s = student(x)  # [B, C]
            # T^2 * KL(target || softmax(s / T)), averaged over the batch; T^2 keeps gradients at CE's scale
            kd = (torch.xlogy(target, target) - target * F.log_softmax(s / T, dim=-1)).sum(-1).mean() * T * T
            labeled = y >= 0
            ce = F.cross_entropy(s[labeled], y[labeled]) if bool(labeled.any()) else s.sum() * 0
            loss = (1 - alpha) * ce + alpha * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            cosine.step()
            step += 1
            if step == steps:
                break
    return student


def main(argv=None):
    import mtkd  # only for the data and the teachers' training; the loop above is plain PyTorch
    from torch.utils.data import DataLoader, TensorDataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="distillation steps")
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--unlabeled", type=int, default=10000, help="size of the unlabeled transfer pool")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = mtkd.load_dataset("mnist1d", unlabeled=args.unlabeled)
    teachers = [mtkd.build_model("cnn1d", data.input_shape, 10), mtkd.build_model("gru", data.input_shape, 10, hidden=32)]
    for teacher in teachers:
        mtkd.train(teacher, mtkd.BatchLoader(data.train, batch_size=100), steps=args.teacher_steps, progress=False)
    transfer = data.transfer_set()  # the labeled train split plus the unlabeled pool (label -1)
    loader = DataLoader(TensorDataset(transfer.x, transfer.y), batch_size=100, shuffle=True)
    student = mtkd.build_model("mlp", data.input_shape, 10, hidden=[100, 100])
    distill(student, teachers, loader, steps=args.steps)
    for name, model in [("cnn1d", teachers[0]), ("gru", teachers[1]), ("student", student)]:
        print(f"{name}: {mtkd.accuracy(model, data.test):.3f}")


if __name__ == "__main__":
    main()
