"""The feature kinds of :mod:`serkd.data.features` as a torch module that exports to ONNX.

``FrontEnd(config)(waveform)`` maps a (batch, samples) float32 waveform at 16 kHz, of any length, to the
(batch, F, T) features :func:`serkd.data.features.compute_features` gives for each row with ``whole=True``:

- no crop: a clip longer than the feature length is taken whole (its frames all count; the students pool
  over time, so any length works), a shorter one is zero-padded to the feature length as in training;
- the seed's presets first standardise the waveform over its real samples, in float64 as the numpy code does
  (``logmel`` keeps the raw level);
- STFT of librosa's periodic window padded centred to ``n_fft`` (``center=True``, zero padding),
  power mel spectrogram with ``librosa.filters.mel`` as a constant, then dB exactly as ``power_to_db``
  (mel: ref = the utterance's max; MFCC: ref 1.0; ``amin`` 1e-10, ``top_db`` 80) and for MFCC the
  orthonormal DCT-II as a constant matrix, or ``log(mel + 1e-6)`` for ``logmel``.

Every shape follows the input length (``1 + max(samples, length) // hop`` frames), so the graph has one
dynamic length axis and no crop; :meth:`FrontEnd.real_frames` says how many frames hold audio (the padded
ones never enter a statistic). :class:`FeatureNormalizer` applies a run's normalisation
(:mod:`serkd.data.normalize`, the same torch functions as at batch time in training).
``ONNX_OPSET`` is the opset of the exported graph.

The DFT is written with matmuls only, because ONNX's DFT op is slow in onnxruntime (12 ms for the
313 frames of a 5 s clip) and a plain windowed-DFT matmul costs ``n_fft`` multiply-adds per bin
(0.7 GFLOP per 5 s for the mel preset, ten times mobilenetv3_small_075 itself). ``FactorisedSTFT``
is one Cooley-Tukey step, n_fft = N1 x N2 with N1 = 32: a batched matmul over the coarse index
(window and twiddles folded in, the window's zero span dropped), then one matmul over the fine
index; with the mel matrix applied in bands of filters against only the bins they touch, the mel
front-end costs 0.09 GFLOP per 5 s instead of 0.70. ``RealFactorisedSTFT`` (the default) exploits the
real input on top: the inner DFTs of real samples are Hermitian, so its stage A computes half of them with
one shared matrix, and only the n_fft / 2 + 1 bins of the half spectrum come out (0.073 GFLOP per 5 s;
12-24 % faster than ``FactorisedSTFT`` in onnxruntime on one thread, measured interleaved on a loaded
2-core machine, though slower in torch eager, whose batched matmul of 17 small matrices is slow).
``DirectSTFT`` is the plain matmul, used when the preset's sizes do not factor that way (and as a
reference in the tests).
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.fft
import torch
from torch import nn

from serkd.data.features import FeatureConfig
from serkd.data.normalize import Statistics, frame_mask, masked_moments, resolve, standardise, utterance_standardise
from serkd.data.normalize import is_identity as normalisation_is_identity

ONNX_OPSET = 20
AMIN = 1e-10  # librosa.power_to_db's default
TOP_DB = 80.0
MEL_BAND = 16
FINE = 32  # N1 of the factorised DFT: sqrt(1024) balances the two matmuls for the seed presets
ONNX_TRANSLATIONS: dict = {}  # custom ops with their own ONNX translation (none: the graph is plain torch ops)


def normalise_pad(wave: torch.Tensor, length: int, normalise: bool) -> torch.Tensor:
    """Torch twin of :func:`serkd.data.features.compute_features`' waveform step with ``whole=True`` for a
    (batch, samples) tensor: standardise over the real samples in float64 (``normalise``), then zero-pad to
    ``length`` when shorter; a longer wave stays whole."""
    n = wave.shape[-1]
    if normalise:
        x = wave.double()  # as the numpy code: statistics in float64
        centred = x - x.mean(-1, keepdim=True)
        wave = (centred / torch.sqrt(centred.square().mean(-1, keepdim=True) + 1e-7)).float()
    return nn.functional.pad(wave, (0, torch.sym_max(length - n, 0)))


def _buffer(module: nn.Module, name: str, array: np.ndarray) -> None:
    module.register_buffer(name, torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), persistent=False)


class _STFTGeometry:
    """Where librosa's frames lie: ``center=True`` pads ``n_fft // 2`` zeros on each side, and a window
    shorter than ``n_fft`` sits centred in the frame, so only ``win_length`` samples per frame matter.

    The signal length ``m`` is whatever the input holds (at least the feature length): ``1 + m // hop``
    frames, as librosa gives, covering ``(frames - 1) * hop + win_length`` samples after the left padding."""

    def __init__(self, length: int, n_fft: int, hop: int, win_length: int, window: str):
        self.n_fft, self.hop, self.win_length = n_fft, hop, win_length
        self.offset = (n_fft - win_length) // 2  # first nonzero window sample within the frame
        self.left = n_fft // 2 - self.offset  # zeros before the signal, counted from the window's span
        if win_length - self.left < hop:  # the right padding below must never be negative
            raise ValueError(f"window {win_length} with hop {hop}: frames past the signal end not supported")
        self.length = length
        self.window = librosa.filters.get_window(window, win_length, fftbins=True)
        self.bins = n_fft // 2 + 1

    def frames(self, samples):
        """Frames of a ``samples``-long signal (an int, or a symbolic size while exporting)."""
        return samples // self.hop + 1

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, m) -> (batch, (frames - 1) * hop + win_length): the samples the frames cover."""
        m = x.shape[-1]
        return nn.functional.pad(x, (self.left, self.win_length - self.left - m % self.hop))


class DirectSTFT(nn.Module):
    """Power spectrum as (frames x win_length) @ (win_length x 2 bins) with the window in the basis."""

    def __init__(self, geo: _STFTGeometry):
        super().__init__()
        self.geo = geo
        phase = 2 * np.pi * np.outer(geo.offset + np.arange(geo.win_length), np.arange(geo.bins)) / geo.n_fft
        w = geo.window[:, None]
        _buffer(self, "basis", np.concatenate([w * np.cos(phase), w * np.sin(phase)], axis=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length) -> power (bins, batch * frames)."""
        g = self.geo
        frames = g.pad(x).unfold(-1, g.win_length, g.hop)
        spectrum = frames @ self.basis
        power = spectrum[..., : g.bins].square() + spectrum[..., g.bins :].square()
        return power.reshape(-1, g.bins).transpose(0, 1)

    def bin_order(self) -> np.ndarray:
        return np.arange(self.geo.bins)


class FactorisedSTFT(nn.Module):
    """One Cooley-Tukey step, n = n1 + N1 n2 and k = N2 k1 + k2:

    X[N2 k1 + k2] = sum_n1 W_N1^(n1 k1) [W_N^(n1 k2) sum_n2 w[n] x[n] W_N2^(n2 k2)].

    Stage A, per n1: (2 N2 x rows) @ (rows x frames) over the n2 rows under the window, with the
    window and the twiddles W_N^(n1 k2) folded into the matrices. Stage B: one (2 K1 x 2 N1) @
    (2 N1 x N2 frames) matmul for k1 <= N1 / 2 (bins above n_fft / 2 get zero mel weight).
    Frequency and (n1, re/im) are leading axes and frames trailing, so the stages chain by reshapes:
    the only transpose is of the signal itself, which is 4x smaller than the frames.
    """

    def __init__(self, geo: _STFTGeometry, fine: int = FINE):
        super().__init__()
        if not self.applies(geo, fine):
            raise ValueError("sizes do not factor for FactorisedSTFT")
        self.geo = geo
        self.fine, self.coarse = fine, geo.n_fft // fine
        rows = geo.win_length // fine  # coarse rows under the window
        n1, k2 = np.arange(fine), np.arange(self.coarse)
        n2 = geo.offset // fine + np.arange(rows)
        k1 = np.arange(fine // 2 + 1)
        self.k1 = len(k1)
        window = geo.window.reshape(rows, fine).T  # (n1, r): the sample at offset + n1 + N1 r
        a = (window[:, None, :] * np.exp(-2j * np.pi * np.outer(k2, n2) / self.coarse)[None]
             * np.exp(-2j * np.pi * np.outer(n1, k2) / geo.n_fft)[:, :, None])  # (n1, k2, r)
        _buffer(self, "stage_a", np.stack([a.real, a.imag], axis=1).reshape(fine, 2 * self.coarse, rows))
        f = np.exp(-2j * np.pi * np.outer(k1, n1) / fine)  # (k1, n1)
        # rows [re k1; im k1], columns (n1, re/im) interleaved as stage A's output rows
        b = np.stack([np.stack([f.real, -f.imag], axis=2), np.stack([f.imag, f.real], axis=2)])
        _buffer(self, "stage_b", b.reshape(2 * self.k1, 2 * fine))

    @staticmethod
    def applies(geo: _STFTGeometry, fine: int = FINE) -> bool:
        return all(v % fine == 0 for v in (geo.n_fft, geo.offset, geo.win_length, geo.hop)) and (
            geo.win_length % geo.hop == 0
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length) -> power (K1 * N2, batch * frames) in bin order N2 k1 + k2."""
        g = self.geo
        batch, n_frames = x.shape[0], g.frames(x.shape[-1])
        span = g.win_length // g.hop  # blocks per frame
        # (n1, j, batch, block): sample N1 (h block + j) + n1 with h = hop / N1; frame t is blocks t..t+W/hop-1
        blocks = g.pad(x).reshape(batch, n_frames - 1 + span, g.hop // self.fine, self.fine).permute(3, 2, 0, 1)
        frames = torch.cat([blocks[..., i : i + n_frames] for i in range(span)], dim=1)
        a = self.stage_a @ frames.reshape(self.fine, -1, batch * n_frames)  # (n1, re/im x k2, frames)
        spectrum = self.stage_b @ a.reshape(2 * self.fine, -1)  # (re/im x k1, k2 x frames)
        power = spectrum[: self.k1].square() + spectrum[self.k1 :].square()
        return power.reshape(self.k1 * self.coarse, batch * n_frames)

    def bin_order(self) -> np.ndarray:
        return (self.coarse * np.arange(self.k1)[:, None] + np.arange(self.coarse)[None]).ravel()


class RealFactorisedSTFT(nn.Module):
    """The Cooley-Tukey step of :class:`FactorisedSTFT`, reordered to exploit the real input.

    With n = n1 + N1 n2 and k = N2 k1 + k2 the inner sums Z[n1, k2] = sum_n2 w[n] x[n] W_N2^(n2 k2) are
    DFTs of real sequences, so Z[n1, N2 - k2] = conj Z[n1, k2]: only k2 <= N2 / 2 are computed (stage A, one
    (2 K2 x rows) matrix shared by every n1, the window applied to the samples first: half the multiply-adds
    of FactorisedSTFT's stage A, one matmul instead of N1). Stage B takes the twiddles, X[N2 k1 + k2] =
    sum_n1 W_N1^(n1 k1) W_N^(n1 k2) Z[n1, k2], as one batched matmul over k2' <= N2 / 2 that writes both
    k2 = k2' and its mirror N2 - k2' (the conjugate folded into the matrix); only the n_fft / 2 + 1 bins of a
    real signal's half spectrum are kept, gathered into bin order.
    """

    def __init__(self, geo: _STFTGeometry, fine: int = FINE):
        super().__init__()
        if not self.applies(geo, fine):
            raise ValueError("sizes do not factor for RealFactorisedSTFT")
        self.geo = geo
        self.fine, self.coarse = fine, geo.n_fft // fine
        rows = geo.win_length // fine
        n1 = np.arange(fine)
        n2 = geo.offset // fine + np.arange(rows)
        self.k2 = self.coarse // 2 + 1  # k2' = 0 .. N2 / 2
        self.k1 = fine // 2 + 1
        _buffer(self, "window", geo.window.reshape(rows, fine)[:, :, None, None])  # (r, n1): offset + n1 + N1 r
        phase = 2 * np.pi * np.outer(np.arange(self.k2), n2) / self.coarse  # (k2', r)
        _buffer(self, "stage_a", np.concatenate([np.cos(phase), -np.sin(phase)]))  # rows (re/im, k2')
        # stage B: per k2', inputs (re/im, n1), outputs (mirror, re/im, k1); mirror 0: k2 = k2', 1: N2 - k2'
        b = np.zeros((self.k2, 2, 2, self.k1, 2, fine))
        k1 = np.arange(self.k1)
        row = {}
        for k2p in range(self.k2):
            for mirror, sign in ((0, 1.0), (1, -1.0)):
                if mirror == 1 and not 0 < k2p < self.coarse // 2:
                    continue  # k2' = 0 and N2 / 2 are their own mirrors
                k2 = k2p if mirror == 0 else self.coarse - k2p
                c = np.exp(-2j * np.pi * np.outer(k1, n1) / fine) * np.exp(-2j * np.pi * n1 * k2 / geo.n_fft)[None]
                b[k2p, mirror, 0, :, 0], b[k2p, mirror, 0, :, 1] = c.real, -sign * c.imag
                b[k2p, mirror, 1, :, 0], b[k2p, mirror, 1, :, 1] = c.imag, sign * c.real
                for kk in range(self.k1):
                    row.setdefault(self.coarse * kk + k2, (2 * k2p + mirror) * self.k1 + kk)
        _buffer(self, "stage_b", b.reshape(self.k2, 4 * self.k1, 2 * fine))
        # the power rows (k2', mirror, k1) holding bins 0 .. n_fft / 2, in bin order
        self.register_buffer("rows", torch.tensor([row[k] for k in range(geo.bins)], dtype=torch.long),
                             persistent=False)

    @staticmethod
    def applies(geo: _STFTGeometry, fine: int = FINE) -> bool:
        return FactorisedSTFT.applies(geo, fine) and (geo.n_fft // fine) % 2 == 0

    def stage_b_factors(self) -> dict[str, np.ndarray]:
        """``stage_b`` as factors (float32), for a compact graph: c = F[k1, n1] * W[k2', mirror, n1] with the
        DFT F = W_N1^(n1 k1) and the twiddles W = W_N^(n1 k2) (zero for the mirrors that do not exist), and
        stage_b[k2', mirror] = [[Re c, -s Im c], [Im c, s Re c]] with s = +1 / -1 for mirror 0 / 1."""
        g = self.geo
        n1, k1 = np.arange(self.fine), np.arange(self.k1)
        f = np.exp(-2j * np.pi * np.outer(k1, n1) / self.fine)[None, None]  # (1, 1, K1, N1)
        w = np.zeros((self.k2, 2, 1, self.fine), dtype=complex)
        for k2p in range(self.k2):
            w[k2p, 0, 0] = np.exp(-2j * np.pi * n1 * k2p / g.n_fft)
            if 0 < k2p < self.coarse // 2:
                w[k2p, 1, 0] = np.exp(-2j * np.pi * n1 * (self.coarse - k2p) / g.n_fft)
        sign = np.array([1.0, -1.0]).reshape(1, 2, 1, 1)
        return {key: np.ascontiguousarray(v, dtype=np.float32) for key, v in (
            ("f_re", f.real), ("f_im", f.imag), ("t_re", w.real), ("t_im", w.imag), ("sign", sign))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length) -> power (n_fft / 2 + 1, batch * frames) in bin order."""
        g = self.geo
        batch, n_frames = x.shape[0], g.frames(x.shape[-1])
        span = g.win_length // g.hop  # blocks per frame
        # (j, n1, batch, block): sample N1 (h block + j) + n1; frame t is blocks t..t+W/hop-1, rows r = (i, j)
        blocks = g.pad(x).reshape(batch, n_frames - 1 + span, g.hop // self.fine, self.fine).permute(2, 3, 0, 1)
        frames = torch.cat([blocks[..., i : i + n_frames] for i in range(span)], dim=0)
        z = self.stage_a @ (frames * self.window).reshape(frames.shape[0], -1)  # (re/im x k2', n1 x frames)
        z = z.reshape(2, self.k2, self.fine, -1).transpose(0, 1).reshape(self.k2, 2 * self.fine, -1)
        out = (self.stage_b @ z).reshape(self.k2, 2, 2, self.k1, -1)  # (k2', mirror, re/im, k1, frames)
        power = (out * out).sum(dim=2)  # one Mul + ReduceSum: 6 % of a mobilenet graph faster than split + 2 Pow + Add
        return power.reshape(-1, batch * n_frames).index_select(0, self.rows)

    def bin_order(self) -> np.ndarray:
        return np.arange(self.geo.bins)


class FrontEnd(nn.Module):
    """Waveform (batch, samples) -> features (batch, F, T), the feature kind of ``config`` in torch."""

    def __init__(self, config: FeatureConfig, factorised: bool = True, real_input: bool = True):
        super().__init__()
        p = config.params
        self.kind = config.kind
        self.length = config.length
        self.hop = config.hop
        self.normalise_waveform = config.spec.normalise_waveform
        self.eps = float(p.get("eps", 0.0))
        geo = _STFTGeometry(config.length, p["n_fft"], p["hop_length"], p.get("win_length") or p["n_fft"],
                            p.get("window", "hann"))
        if factorised and real_input and RealFactorisedSTFT.applies(geo):
            self.stft = RealFactorisedSTFT(geo)
        elif factorised and FactorisedSTFT.applies(geo):
            self.stft = FactorisedSTFT(geo)
        else:
            self.stft = DirectSTFT(geo)
        mel = librosa.filters.mel(sr=config.sample_rate, n_fft=p["n_fft"], n_mels=p["n_mels"], fmax=p.get("fmax"))
        order = self.stft.bin_order()
        # columns follow the STFT's bin order; bins above n_fft / 2 (factorised only) get zero weight
        mel = np.where(order < geo.bins, mel[:, np.minimum(order, geo.bins - 1)], 0.0)
        # mel filters are triangles (1009 nonzeros of 128 x 513): consecutive filters in bands of
        # MEL_BAND, each against only the bins it touches, cost 13% of the dense matmul
        self.bands = []
        for i, first in enumerate(range(0, len(mel), MEL_BAND)):
            used = np.flatnonzero(mel[first : first + MEL_BAND].any(axis=0))
            lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
            _buffer(self, f"mel_{i}", mel[first : first + MEL_BAND, lo:hi])
            self.bands.append((lo, hi))
        self.n_mels = len(mel)
        self.output_bins = p["n_mfcc"] if self.kind == "mfcc" else self.n_mels  # F of the features
        if self.kind == "mfcc":
            _buffer(self, "dct", scipy.fft.dct(np.eye(p["n_mels"]), type=2, norm="ortho", axis=0)[: p["n_mfcc"]])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.features(normalise_pad(wave, self.length, self.normalise_waveform))

    def real_frames(self, wave: torch.Tensor):
        """Frames of ``forward(wave)`` that hold audio: frame t is centred on sample t * hop, so ceil(n / hop)
        (:func:`serkd.data.features.real_frames` with ``whole=True``); the rest cover the zero padding."""
        return (wave.shape[-1] + self.hop - 1) // self.hop

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of already normalised and padded (batch, samples) signals."""
        power = self.stft(x)
        mel = torch.cat([getattr(self, f"mel_{i}") @ power[lo:hi] for i, (lo, hi) in enumerate(self.bands)])
        mel = mel.reshape(self.n_mels, x.shape[0], -1).transpose(0, 1)  # (batch, n_mels, frames)
        if self.kind == "logmel":
            return torch.log(mel + self.eps)
        db = 10.0 * torch.log10(mel.clamp(min=AMIN))
        if self.kind == "mel":
            db = db - 10.0 * torch.log10(mel.amax(dim=(1, 2), keepdim=True).clamp(min=AMIN))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - TOP_DB)
        return self.dct @ db if self.kind == "mfcc" else db


class FeatureNormalizer(nn.Module):
    """A run's normalisation (``checkpoint.json``'s ``normalization``, :mod:`serkd.data.normalize`) in torch.

    ``forward(features, real_frames, mean=None, std=None)``: nothing (``none``, or ``utterance`` on the seed's
    presets), each row over its own real frames (``utterance`` on ``logmel``), or ``(x - mean) / std`` per bin
    with the recorded corpus statistics (``corpus``), or with statistics given per call (``speaker``: the
    recorded corpus statistics are the default when none are given). A record without statistics (a graph's
    torch twin rebuilt from its metadata, for timing) gets zeros and ones, and ``placeholder`` says so: export
    refuses such a module.
    """

    def __init__(self, record: dict | None, kind: str, bins: int):
        super().__init__()
        record = record or {}
        self.normalize = resolve(record.get("normalize"), kind)
        self.record = record
        self.placeholder = False
        if normalisation_is_identity(self.normalize, kind):
            self.mode = "identity"
        elif self.normalize == "utterance":
            self.mode = "utterance"
        else:
            self.mode = "statistics"
            if "corpus" in record:
                stats = Statistics.from_json(record["corpus"])
            else:
                stats = Statistics(np.zeros(bins, dtype=np.float32), np.ones(bins, dtype=np.float32), 0)
                self.placeholder = True
            _buffer(self, "mean", stats.mean)
            _buffer(self, "std", stats.std)

    @property
    def takes_statistics(self) -> bool:
        """Speaker statistics come in per call (graph inputs ``feature_mean`` / ``feature_std``)."""
        return self.normalize == "speaker"

    def forward(self, features: torch.Tensor, real_frames, mean: torch.Tensor | None = None,
                std: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "identity":
            return features
        if self.mode == "utterance":
            return utterance_standardise(features, frame_mask(real_frames, features.shape[-1]))
        return standardise(features, self.mean if mean is None else mean, self.std if std is None else std)


def feature_moments(features: torch.Tensor, real_frames) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real-frame count (B,), per-bin sum and sum of squares (B, F) of un-normalised features: summed over a
    speaker's clips they give that speaker's statistics (:class:`serkd.data.normalize.Moments`)."""
    count, total, squares = masked_moments(features, frame_mask(real_frames, features.shape[-1]))
    return count.reshape(-1).expand(features.shape[0]), total, squares


def compact_frontend(proto, frontend: FrontEnd) -> None:
    """Make an exported graph small without changing what it computes (in place).

    - ``RealFactorisedSTFT.stage_b`` (17 x 68 x 64 floats, 296 KB: most of a small student's file) is stored
      as its factors, a DFT matrix and per-bin twiddles (17 KB), and rebuilt by a few elementwise nodes that
      onnxruntime folds into a constant when it loads the graph (no cost per call);
    - the exporter's per-node debugging metadata (source lines, class paths) goes.
    """
    for node in proto.graph.node:
        del node.metadata_props[:]
    stft = frontend.stft
    if isinstance(stft, RealFactorisedSTFT):
        _factor_initializer(proto, stft.stage_b.numpy(), stft.stage_b_factors())


def _factor_initializer(proto, value: np.ndarray, factors: dict[str, np.ndarray]) -> None:
    """Replace the initializer holding ``value`` by nodes computing it from ``factors`` (see
    :meth:`RealFactorisedSTFT.stage_b_factors`)."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    found = [i for i, init in enumerate(graph.initializer)
             if tuple(init.dims) == value.shape and np.allclose(numpy_helper.to_array(init), value, atol=1e-6)]
    if not found:
        return  # the exporter stored it otherwise (folded into another constant): leave the graph as it is
    name = graph.initializer[found[0]].name
    del graph.initializer[found[0]]
    prefix = name.replace(".", "_") + "_factor_"
    inits = {key: f"{prefix}{key}" for key in factors}
    for key, array in factors.items():
        graph.initializer.append(numpy_helper.from_array(array, inits[key]))
    graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), prefix + "axis2"))
    graph.initializer.append(numpy_helper.from_array(np.array([3], dtype=np.int64), prefix + "axis3"))
    graph.initializer.append(numpy_helper.from_array(np.array(value.shape, dtype=np.int64), prefix + "shape"))
    t = lambda suffix: prefix + suffix  # noqa: E731 - intermediate names
    nodes = [
        helper.make_node("Mul", [inits["f_re"], inits["t_re"]], [t("rr")]),
        helper.make_node("Mul", [inits["f_im"], inits["t_im"]], [t("ii")]),
        helper.make_node("Mul", [inits["f_re"], inits["t_im"]], [t("ri")]),
        helper.make_node("Mul", [inits["f_im"], inits["t_re"]], [t("ir")]),
        helper.make_node("Sub", [t("rr"), t("ii")], [t("re")]),  # (K2', mirror, K1, N1)
        helper.make_node("Add", [t("ri"), t("ir")], [t("im")]),
        helper.make_node("Mul", [inits["sign"], t("im")], [t("s_im")]),
        helper.make_node("Neg", [t("s_im")], [t("neg_s_im")]),
        helper.make_node("Mul", [inits["sign"], t("re")], [t("s_re")]),
    ]
    for key in ("re", "im", "neg_s_im", "s_re"):
        nodes.append(helper.make_node("Unsqueeze", [t(key), prefix + "axis3"], [t(key + "_u")]))
    nodes += [
        helper.make_node("Concat", [t("re_u"), t("neg_s_im_u")], [t("out_re")], axis=3),  # rows of output re
        helper.make_node("Concat", [t("im_u"), t("s_re_u")], [t("out_im")], axis=3),
        helper.make_node("Unsqueeze", [t("out_re"), prefix + "axis2"], [t("out_re_u")]),
        helper.make_node("Unsqueeze", [t("out_im"), prefix + "axis2"], [t("out_im_u")]),
        helper.make_node("Concat", [t("out_re_u"), t("out_im_u")], [t("blocks")], axis=2),
        helper.make_node("Reshape", [t("blocks"), prefix + "shape"], [name]),
    ]
    for i, node in enumerate(nodes):
        node.name = f"{prefix}node{i}"
    for node in reversed(nodes):
        graph.node.insert(0, node)
