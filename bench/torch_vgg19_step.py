"""PyTorch reference for bench/vgg_step.py: VGG19 to relu5_4 (max pooling, random frozen weights), forward
and the gradient of mean(relu5_4) with respect to the [B, 3, S, S] input, as that script's MindSpore step.

    python bench/torch_vgg19_step.py SIZE BATCH STEPS

Prints 'torch vgg19 forward+backward median ms X' and the peak RSS (run by ``vgg_step.py --torch`` in its
own process, so torch's threads and oneDNN settings do not meet MindSpore's).
"""
import argparse

from train_step import median_ms, peak_rss_gb  # bench/train_step.py (standard library only: no MindSpore, no oneDNN cap)

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


def vgg19_relu5_4():
    from torch import nn
    layers, cin = [], 3
    for v in CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    net = nn.Sequential(*layers)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("size", "batch", "steps"):
        parser.add_argument(name, type=int)
    args = parser.parse_args()
    import torch  # after the arguments: --help answers without torch
    size, batch, steps = args.size, args.batch, args.steps
    torch.manual_seed(0)
    net = vgg19_relu5_4()
    x = (torch.rand(batch, 3, size, size) * 200 - 100).requires_grad_(True)

    def step():
        x.grad = None
        net(x).mean().backward()

    print(f"torch vgg19 forward+backward median ms {median_ms(step, steps, warmup=1):.1f}")
    print(f"peak RSS GB {peak_rss_gb():.2f}")


if __name__ == "__main__":
    main()
