# PyTorch peers for the igemm benchmark (perf/gpu/igemm_bench.cu bench), same
# pipeline and sizes: ConvTranspose2d(64, 64, k3, s2, p1, op1) on
# [128, 64, 128, 128] -> mish -> +0.5 -> hardtanh(-1, 1) -> x2.
# Times are triton.testing.do_bench medians (L2 flushed before each run).
import torch
import torch.nn.functional as F
from triton.testing import do_bench

torch.manual_seed(0)
dev = "cuda"
N, C, H, W = 128, 64, 128, 128


def pipeline(conv, x):
    y = conv(x)
    y = F.mish(y)
    y = y + 0.5
    y = F.hardtanh(y, -1.0, 1.0)
    return y * 2.0


def bench(fn):
    return do_bench(fn, warmup=50, rep=300, return_mode="median")


conv = torch.nn.ConvTranspose2d(C, C, 3, stride=2, padding=1, output_padding=1).to(dev)
x = torch.rand(N, C, H, W, device=dev)
torch.backends.cudnn.benchmark = True
res = {}
with torch.no_grad():
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    res["eager TF32 (cuDNN + 4 epilogue kernels)"] = bench(lambda: pipeline(conv, x))
    res["eager TF32 conv alone (cuDNN)"] = bench(lambda: conv(x))
    comp = torch.compile(lambda xx: pipeline(conv, xx))
    comp(x)
    res["torch.compile TF32"] = bench(lambda: comp(x))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    res["eager strict fp32"] = bench(lambda: pipeline(conv, x))
    torch.backends.cudnn.allow_tf32 = True
    conv_h = torch.nn.ConvTranspose2d(C, C, 3, stride=2, padding=1, output_padding=1).to(dev).to(torch.bfloat16)
    xh = x.to(torch.bfloat16)
    res["eager bf16"] = bench(lambda: pipeline(conv_h, xh))
    comp_h = torch.compile(lambda xx: pipeline(conv_h, xx))
    comp_h(xh)
    res["torch.compile bf16"] = bench(lambda: comp_h(xh))
    # Reduction over C: convT -> logsumexp(dim=1, keepdim) (output [N, 1, Hout, Wout]).
    torch.backends.cudnn.allow_tf32 = True
    comp_r = torch.compile(lambda xx: torch.logsumexp(conv(xx), dim=1, keepdim=True))
    comp_r(x)
    res["torch.compile TF32 convT -> logsumexp over C"] = bench(lambda: comp_r(x))
    res["eager TF32 convT -> logsumexp over C"] = bench(lambda: torch.logsumexp(conv(x), dim=1, keepdim=True))
print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
for k, v in res.items():
    print(f"TORCH {k:45s} {v:8.3f} ms")
