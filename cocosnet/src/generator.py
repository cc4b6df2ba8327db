"""CoCosNet translation network (the reference ``SPADEGenerator`` with ``CBN_intype=warp_mask``, PONO, attention).

The conditioning map ``m`` = [warped exemplar (3), one-hot label map (label_nc)] (154 channels for
ADE20K) drives every SPADE. At 256x256, full width ``ngf=64``::

    m@8 [B,154,8,8] -fc 3x3-> [B,1024,8,8] -head_0-> x2 -G_middle_0, G_middle_1-> [B,1024,16,16]
    x2 -up_0-> [B,512,32,32] x2 -up_1-> [B,256,64,64] x2 -attn-> -up_2-> [B,128,128,128]
    x2 -up_3-> [B,64,256,256] -LReLU(0.2), conv 3x3, tanh-> [B,3,256,256]

``x2`` is a nearest upsampling; ``m@8`` the nearest resize of ``m`` to H/32 x W/32. Each block gets ``m``
resized once to its resolution, with the label map as data: the backward carries only the warped exemplar's
3 channels (the SPADEs' ``cond_grad_channels``), not 154 at every block.
"""
from mindspore import nn, ops

from common.layers import LeakyReLU
from cocosnet.src.blocks import Attention, SPADEResnetBlock, conv2d, nearest_resize

__all__ = ["TranslationNet"]


class TranslationNet(nn.Cell):
    """SPADE generator conditioned on [warped exemplar, label map].

    Args:
        label_nc: one-hot classes (151 for ADE20K); the input has ``3 + label_nc`` channels.
        ngf: width (64); block widths are 16, 16, 16, 8, 4, 2, 1 times ngf.
        spade_hidden: hidden channels of every SPADE (128).
        attention: self-attention on the 4*ngf features before ``up_2`` (at H/2 x W/2).

    Shapes: [B, 3 + label_nc, H, W] -> [B, 3, H, W] in [-1, 1]; H, W multiples of 32, at least 64.
    :meth:`stages` returns every stage's output; :meth:`low_resolution` (up to H/2) and
    :meth:`high_resolution` (the rest) are its two parts.
    """

    def __init__(self, label_nc=151, ngf=64, spade_hidden=128, attention=True):
        super().__init__()
        ic = 3 + label_nc
        nf = ngf
        grad = (0, 3)  # the warped exemplar; the label map is data
        self.fc = conv2d(ic, 16 * nf, 3, padding=1, grad_channels=grad)
        self.head_0 = SPADEResnetBlock(16 * nf, 16 * nf, ic, spade_hidden, cond_grad_channels=grad)
        self.G_middle_0 = SPADEResnetBlock(16 * nf, 16 * nf, ic, spade_hidden, cond_grad_channels=grad)
        self.G_middle_1 = SPADEResnetBlock(16 * nf, 16 * nf, ic, spade_hidden, cond_grad_channels=grad)
        self.up_0 = SPADEResnetBlock(16 * nf, 8 * nf, ic, spade_hidden, cond_grad_channels=grad)
        self.up_1 = SPADEResnetBlock(8 * nf, 4 * nf, ic, spade_hidden, cond_grad_channels=grad)
        self.use_attention = attention
        if attention:
            self.attn = Attention(4 * nf)
        self.up_2 = SPADEResnetBlock(4 * nf, 2 * nf, ic, spade_hidden, cond_grad_channels=grad)
        self.up_3 = SPADEResnetBlock(2 * nf, 1 * nf, ic, spade_hidden, cond_grad_channels=grad)
        self.actvn = LeakyReLU(0.2)
        self.conv_img = conv2d(nf, 3, 3, padding=1)

    @staticmethod
    def _up(x):
        return nearest_resize(x, (2 * x.shape[2], 2 * x.shape[3]))

    @staticmethod
    def _conditioning(seg, factors):
        """``seg`` [B, 3 + L, H, W] resized to H/f for each f of ``factors``, the label map behind a
        stop-gradient (it is data) -> one map [B, 3 + L, H/f, W/f] per factor."""
        warp, label = ops.split(seg, (3, seg.shape[1] - 3), axis=1)
        label = ops.stop_gradient(label)
        h, w = seg.shape[2], seg.shape[3]
        return tuple(ops.cat((nearest_resize(warp, (h // f, w // f)), nearest_resize(label, (h // f, w // f))), 1)
                     for f in factors)

    def low_resolution(self, seg):
        """fc .. attention: ``seg`` [B, 3 + L, H, W] -> the stages before up_2, 7 tensors ending with the
        attention output [B, 4ngf, H/2, W/2] (up_1's output again without attention)."""
        h, w = seg.shape[2], seg.shape[3]
        if h % 32 or w % 32 or h < 64 or w < 64:
            raise ValueError(f"TranslationNet input is {h}x{w}; height and width must be multiples of 32 and at "
                             f"least 64 (the first block reflection-pads an H/32 x W/32 map)")
        m32, m16, m8, m4 = self._conditioning(seg, (32, 16, 8, 4))
        x0 = self.fc(m32)
        x1 = self.head_0(x0, m32)
        x2 = self.G_middle_0(self._up(x1), m16)
        x3 = self.G_middle_1(x2, m16)
        x4 = self.up_0(self._up(x3), m8)
        x5 = self.up_1(self._up(x4), m4)
        x6 = self._up(x5)
        if self.use_attention:
            x6 = self.attn(x6)
        return x0, x1, x2, x3, x4, x5, x6

    def high_resolution(self, x, seg):
        """up_2, up_3 and the image: ``x`` [B, 4ngf, H/2, W/2] (:meth:`low_resolution`'s last stage), ``seg``
        [B, 3 + L, H, W] -> (up_2 [B, 2ngf, H/2, W/2], up_3 [B, ngf, H, W], image [B, 3, H, W])."""
        m2, m1 = self._conditioning(seg, (2, 1))
        x7 = self.up_2(x, m2)
        x8 = self.up_3(self._up(x7), m1)
        return x7, x8, ops.tanh(self.conv_img(self.actvn(x8)))

    def stages(self, seg):
        """Outputs of fc, head_0, G_middle_0, G_middle_1, up_0, up_1, attn (or up_1 again), up_2, up_3 and
        the image, in that order (a tuple of 10 [B, C, H', W'] tensors)."""
        low = self.low_resolution(seg)
        return low + self.high_resolution(low[-1], seg)

    def construct(self, seg):
        return self.stages(seg)[-1]
