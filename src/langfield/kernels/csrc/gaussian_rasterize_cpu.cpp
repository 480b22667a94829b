// Tile-based alpha blending of projected 2D Gaussians (Kerbl et al. 2023, "3D Gaussian Splatting
// for Real-Time Radiance Field Rendering", Sec. 6) -- CPU kernels, forward and backward,
// parallelised over tiles with OpenMP.
//
// Semantics (the reference rasteriser's blending, any channel count D). Pixel (i, j) has its
// centre at (px, py) = (j + 0.5, i + 0.5) and lies in tile t = (i / ts) * tiles_x + j / ts; the
// tile's Gaussians are gaussian_ids[tile_ranges[t, 0] .. tile_ranges[t, 1]), front to back:
//
//   T = 1; C = 0; last = start
//   for k in [start, end):
//     g = gaussian_ids[k]; dx = mean_x - px; dy = mean_y - py
//     power = -0.5 (a dx^2 + c dy^2) - b dx dy          conic (a, b, c) = inverse 2D covariance
//     if power > 0: continue
//     alpha = min(0.99, opacity * exp(power))
//     if alpha < 1/255: continue
//     next_T = T (1 - alpha)
//     if next_T < 1e-4: break                           (this Gaussian is not blended)
//     C += feature * alpha * T; T = next_T; last = k + 1
//   image = C + T * background; alpha_out = 1 - T
//
// The backward is the exact derivative of the above, including the clamp: where
// opacity * exp(power) > 0.99 the alpha does not depend on opacity or power (as torch's
// clamp(max=0.99)). It walks each pixel back to front from `last`, recovering T_k = T_{k+1} / (1 - alpha_k).
//
// Work layout: one task per tile (OpenMP dynamic schedule); inside a tile the Gaussians are the
// outer loop and the pixels the inner one, 8 pixels of a row per vector operation (GCC vector
// extensions; per-pixel state lives in tile buffers whose rows are padded to whole vectors).
//   * A Gaussian only visits, in each row, the span of pixels inside the ellipse where alpha can
//     reach 1/255 (widened by one pixel and by 0.01 in log space, so every pixel left out would
//     have been skipped by the tests above anyway), rounded out to whole vectors and masked.
//   * exp is a branch-free polynomial (about 1 ulp), shared by forward and backward, so the
//     backward recomputes bit for bit the forward's alphas and skip decisions.
//   * Forward colours accumulate channel-major in a tile buffer for D <= 16 (vector over pixels),
//     otherwise per blended pixel straight into the image (vector over channels). A tile stops
//     once all its pixels have terminated.
//   * The backward keeps per-pixel T_{k+1}, the dot product of grad_image with everything
//     behind k (background * final_T included), and grad_alpha * final_T; grad_image is
//     transposed channel-major per tile so all D-loops run 8 pixels at a time.
//
// Non-finite features (or upstream gradients) spread NaN to the pixels that share a vector with
// a blended one (0 * inf), much as the dense reference's weights @ features does; finite inputs
// are unaffected (a zero weight adds +-0).
//
// Determinism: in the backward every tile-list entry k writes its gradient (summed over the
// tile's pixels in a fixed order) into its own row of a [M, 6 + D] buffer; the rows are then
// summed per Gaussian in increasing k. No atomics, so results are bitwise reproducible and do not
// even depend on the thread count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr float kAlphaMax = 0.99f;
constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kMinTransmittance = 1e-4f;
constexpr int kEntryScalars = 6;  // d mean_x, d mean_y, d a, d b, d c, d opacity; then D features

// Per-Gaussian constants shared by forward and backward (computed identically in both).
struct Splat {
  float mx, my, a, b, c, op;
  int32_t empty;    // no pixel can pass the alpha test
  int32_t bounded;  // positive definite conic: only pixels inside the ellipse Q <= r are visited
  float r;          // Q(d) = a dx^2 + 2 b dx dy + c dy^2 <= r  <=>  power >= lo (see make_splat)
  float inv_a, b_over_a, det_over_a;
  float ey;         // half height of the ellipse's bounding box, + 1 pixel
};

Splat make_splat(const float* means, const float* conics, const float* opac, int64_t g) {
  Splat s;
  s.mx = means[2 * g];
  s.my = means[2 * g + 1];
  s.a = conics[3 * g];
  s.b = conics[3 * g + 1];
  s.c = conics[3 * g + 2];
  s.op = opac[g];
  s.empty = 0;
  s.bounded = 0;
  s.r = s.inv_a = s.b_over_a = s.det_over_a = s.ey = 0.0f;
  if (!(s.op > 0.0f)) {  // opacity <= 0 (or NaN): alpha never reaches 1/255
    s.empty = 1;
    return s;
  }
  // op * exp(power) >= 1/255  <=>  power >= log(1 / (255 op)). `lo` has 0.01 of slack in log
  // space, far above the rounding of power, exp and this log: a pixel with power < lo has
  // alpha < 1/255 and would be skipped by the blending loop anyway.
  const double lo = std::log(1.0 / (255.0 * static_cast<double>(s.op))) - 0.01;
  if (lo > 0.0) {  // would need power > 0, which is skipped too
    s.empty = 1;
    return s;
  }
  const double a = s.a, b = s.b, c = s.c, det = a * c - b * b;
  const double r = -2.0 * lo;
  const double ey = std::sqrt(r * a / det) + 1.0;
  if (a > 0.0 && c > 0.0 && det > 0.0 && std::isfinite(det) && std::isfinite(s.mx) && std::isfinite(s.my) &&
      std::isfinite(ey) && std::isfinite(c / det) && ey < 1e7) {
    s.bounded = 1;
    s.r = static_cast<float>(r);
    s.inv_a = static_cast<float>(1.0 / a);
    s.b_over_a = static_cast<float>(b / a);
    s.det_over_a = static_cast<float>(det / a);
    s.ey = static_cast<float>(ey);  // max |dy| on the ellipse Q = r, + 1
  }
  return s;
}

// Splat constants of all Gaussians (parallel, N is small next to the pixel work).
std::vector<Splat> make_splats(const float* means, const float* conics, const float* opac, int64_t n) {
  std::vector<Splat> splats(static_cast<size_t>(n));
  at::parallel_for(0, n, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) splats[g] = make_splat(means, conics, opac, g);
  });
  return splats;
}

// Clamp a (possibly infinite or NaN) float to [lo, hi] as an int; NaN -> lo.
inline int clamp_index(float v, int lo, int hi) {
  if (!(v >= static_cast<float>(lo))) return lo;
  if (!(v <= static_cast<float>(hi))) return hi;
  return static_cast<int>(v);
}

// Rows [*y0, *y1) of the tile that the splat can reach (pixel i is reached when |my - (i + 0.5)| <= ey).
inline void splat_rows(const Splat& s, int ty0, int ty1, int* y0, int* y1) {
  if (!s.bounded) {
    *y0 = ty0, *y1 = ty1;
    return;
  }
  *y0 = clamp_index(std::ceil(s.my - s.ey - 0.5f), ty0, ty1);
  *y1 = clamp_index(std::floor(s.my + s.ey - 0.5f) + 1.0f, ty0, ty1);
}

// Columns [*x0, *x1) of the tile's row y inside the ellipse Q <= r, widened by one pixel each side.
// For fixed dy, Q = a (dx + b dy / a)^2 + (det / a) dy^2, so the pixel centres px = mx - dx
// satisfy |px - (mx + b dy / a)| <= sqrt((r - det dy^2 / a) / a). Returns false for an empty row.
// (Float rounding here is far inside the one-pixel margin and the 0.01 slack of r.)
inline bool splat_span(const Splat& s, float dy, int tx0, int tx1, int* x0, int* x1) {
  if (!s.bounded) {
    *x0 = tx0, *x1 = tx1;
    return tx1 > tx0;
  }
  const float rem = s.r - s.det_over_a * dy * dy;
  if (rem < 0.0f) return false;
  const float half = std::sqrt(rem * s.inv_a) + 1.0f;
  const float centre = s.mx + s.b_over_a * dy;
  *x0 = clamp_index(std::ceil(centre - half - 0.5f), tx0, tx1);
  *x1 = clamp_index(std::floor(centre + half - 0.5f) + 1.0f, tx0, tx1);
  return *x1 > *x0;
}

// ------------------------------------------------------------------ 8-lane vectors
// GCC/Clang vector extensions: one AVX register with -mavx2, two SSE registers without. Only
// lane-wise IEEE operations (no FMA contraction, see the build flags), so every lane computes
// bit for bit what the scalar expression would.

constexpr int kLanes = 8;
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

inline vf8 bcast(float v) { return vf8{v, v, v, v, v, v, v, v}; }
inline vi8 bcast_i(int32_t v) { return vi8{v, v, v, v, v, v, v, v}; }
inline vf8 load_f(const float* p) {
  vf8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline vi8 load_i(const int32_t* p) {
  vi8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store_f(float* p, vf8 v) { std::memcpy(p, &v, sizeof(v)); }
inline void store_i(int32_t* p, vi8 v) { std::memcpy(p, &v, sizeof(v)); }
inline vi8 bits_of(vf8 v) {
  vi8 r;
  std::memcpy(&r, &v, sizeof(r));
  return r;
}
inline vf8 float_of(vi8 v) {
  vf8 r;
  std::memcpy(&r, &v, sizeof(r));
  return r;
}
// mask lanes are all ones (true) or zero (false), as produced by vector comparisons
inline vf8 select_f(vi8 mask, vf8 a, vf8 b) { return float_of((mask & bits_of(a)) | (~mask & bits_of(b))); }
inline vi8 select_i(vi8 mask, vi8 a, vi8 b) { return (mask & a) | (~mask & b); }
inline int32_t lane_sum(vi8 v) {
  int32_t s = 0;
  for (int j = 0; j < kLanes; ++j) s += v[j];
  return s;
}
// sum of the lanes in a fixed order (deterministic)
inline float lane_total(vf8 v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// power = -0.5 (a dx^2 + c dy^2) - b dx dy for the 8 pixel centres px = x + 0.5, x = first_x + lane
inline vf8 splat_power8(const Splat& s, int first_x, float dy, vf8* dx_out) {
  const vi8 iota = {0, 1, 2, 3, 4, 5, 6, 7};
  const vf8 px = __builtin_convertvector(iota + bcast_i(first_x), vf8) + bcast(0.5f);
  const vf8 dx = bcast(s.mx) - px;
  const vf8 dyv = bcast(dy);
  *dx_out = dx;
  return bcast(-0.5f) * (bcast(s.a) * dx * dx + bcast(s.c) * dyv * dyv) - bcast(s.b) * dx * dyv;
}

// exp(x) to about 1 ulp for x in [-87, 88] (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree-5
// polynomial, 2^n through the exponent bits); no libm call. Inputs are clamped to [-87, 88], and
// NaN becomes -87 (a negligible alpha, skipped like the reference's NaN alpha).
inline vf8 fast_exp8(vf8 x) {
  x = select_f(x > bcast(-87.0f), x, bcast(-87.0f));
  x = select_f(x < bcast(88.0f), x, bcast(88.0f));
  const vf8 round_magic = bcast(12582912.0f);  // 1.5 * 2^23: adding and subtracting rounds to an integer
  const vf8 n = (x * bcast(1.44269504088896341f) + round_magic) - round_magic;
  vf8 r = x - n * bcast(0.693359375f);
  r = r - n * bcast(-2.12194440e-4f);
  vf8 p = bcast(1.9875691500e-4f);
  p = p * r + bcast(1.3981999507e-3f);
  p = p * r + bcast(8.3334519073e-3f);
  p = p * r + bcast(4.1665795894e-2f);
  p = p * r + bcast(1.6666665459e-1f);
  p = p * r + bcast(5.0000001201e-1f);
  const vf8 y = p * (r * r) + r + bcast(1.0f);
  const vi8 e = (__builtin_convertvector(n, vi8) + bcast_i(127)) << 23;
  return y * float_of(e);
}

// Lanes [*i0, *i1) of a tile row (stride a multiple of kLanes) covering the span [s0, s1).
inline void lane_range(int s0, int s1, int* i0, int* i1) {
  *i0 = s0 - s0 % kLanes;
  *i1 = s1 + (kLanes - s1 % kLanes) % kLanes;
}

int num_threads_for(int64_t tasks) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks)));
}

struct Geometry {
  int64_t width, height, tile_size, tiles_x, tiles_y, num_tiles;
};

Geometry check_common(const at::Tensor& means, const at::Tensor& conics, const at::Tensor& opac,
                      const at::Tensor& features, const at::Tensor& background, const at::Tensor& ids,
                      const at::Tensor& ranges, int64_t width, int64_t height, int64_t tile_size) {
  for (const at::Tensor* t : {&means, &conics, &opac, &features, &background}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "gaussian rasteriser: float tensors must be contiguous float32 CPU tensors");
  }
  TORCH_CHECK(ids.device().is_cpu() && ids.scalar_type() == at::kLong && ids.is_contiguous() && ids.dim() == 1,
              "gaussian_ids must be a contiguous int64 CPU [M] tensor");
  TORCH_CHECK(ranges.device().is_cpu() && ranges.scalar_type() == at::kLong && ranges.is_contiguous() &&
                  ranges.dim() == 2 && ranges.size(1) == 2,
              "tile_ranges must be a contiguous int64 CPU [T, 2] tensor");
  TORCH_CHECK(width >= 0 && height >= 0 && tile_size >= 1 && tile_size <= 1024,
              "need width, height >= 0 and 1 <= tile_size <= 1024");
  TORCH_CHECK(width < (int64_t(1) << 24) && height < (int64_t(1) << 24), "image too large");
  const int64_t n = means.size(0);
  TORCH_CHECK(means.dim() == 2 && means.size(1) == 2, "means2d must be [N, 2]");
  TORCH_CHECK(conics.dim() == 2 && conics.size(0) == n && conics.size(1) == 3, "conics must be [N, 3]");
  TORCH_CHECK(opac.dim() == 1 && opac.size(0) == n, "opacities must be [N]");
  TORCH_CHECK(features.dim() == 2 && features.size(0) == n && features.size(1) >= 1, "features must be [N, D]");
  TORCH_CHECK(background.dim() == 1 && background.size(0) == features.size(1), "background must be [D]");
  Geometry geo;
  geo.width = width;
  geo.height = height;
  geo.tile_size = tile_size;
  geo.tiles_x = (width + tile_size - 1) / tile_size;
  geo.tiles_y = (height + tile_size - 1) / tile_size;
  geo.num_tiles = geo.tiles_x * geo.tiles_y;
  TORCH_CHECK(ranges.size(0) == geo.num_tiles, "tile_ranges must have tiles_y * tiles_x rows");
  const int64_t m = ids.size(0);
  TORCH_CHECK(m < (int64_t(1) << 31) - 1, "too many tile entries (int32 'last' indices)");
  const int64_t* id = ids.const_data_ptr<int64_t>();
  for (int64_t k = 0; k < m; ++k) {
    TORCH_CHECK(id[k] >= 0 && id[k] < n, "gaussian_ids entries must lie in [0, N)");
  }
  const int64_t* rg = ranges.const_data_ptr<int64_t>();
  for (int64_t t = 0; t < geo.num_tiles; ++t) {
    TORCH_CHECK(rg[2 * t] >= 0 && rg[2 * t] <= rg[2 * t + 1] && rg[2 * t + 1] <= m,
                "tile_ranges rows must satisfy 0 <= start <= end <= M");
  }
  return geo;
}

// ------------------------------------------------------------------------------------ forward

// Calls fn(std::integral_constant<int, DT>()) with the channel count DT as a compile-time
// constant where it is common (0: use the runtime value).
template <typename Fn>
void dispatch_channels(int64_t channels, Fn&& fn) {
  switch (channels) {
    case 1: fn(std::integral_constant<int, 1>()); break;
    case 2: fn(std::integral_constant<int, 2>()); break;
    case 3: fn(std::integral_constant<int, 3>()); break;
    case 4: fn(std::integral_constant<int, 4>()); break;
    case 8: fn(std::integral_constant<int, 8>()); break;
    case 16: fn(std::integral_constant<int, 16>()); break;
    case 32: fn(std::integral_constant<int, 32>()); break;
    case 64: fn(std::integral_constant<int, 64>()); break;
    default: fn(std::integral_constant<int, 0>()); break;
  }
}

struct ForwardArgs {
  const Splat* splats;
  const float* fp;
  const float* bg;
  const int64_t* id;
  const int64_t* rg;
  float* img;
  float* alp;
  float* fin;
  int32_t* lst;
  int W, H, ts;
  int64_t tiles_x, num_tiles, D;
};

// The tile lists visit Gaussians in depth order, i.e. at random: fetch the splat and feature
// rows a few entries ahead.
constexpr int64_t kPrefetch = 4;
constexpr int64_t kChannelMajorMax = 16;  // forward colour layout switch, see forward_tiles
inline void prefetch_gaussian(const Splat* splats, const float* fp, int64_t D, int64_t g) {
  __builtin_prefetch(splats + g);
  const float* f = fp + g * D;
  for (int64_t d = 0; d < D; d += 16) __builtin_prefetch(f + d);
}

// DT > 0: channel count known at compile time (DT == 0: runtime args.D).
template <int DT>
void forward_tiles(const ForwardArgs& args) {
  const Splat* splats = args.splats;
  const float* fp = args.fp;
  const float* bg = args.bg;
  const int64_t* id = args.id;
  const int64_t* rg = args.rg;
  float* img = args.img;
  float* alp = args.alp;
  float* fin = args.fin;
  int32_t* lst = args.lst;
  const int W = args.W, H = args.H, ts = args.ts;
  const int64_t tiles_x = args.tiles_x, num_tiles = args.num_tiles;
  const int64_t D = DT > 0 ? DT : args.D;

#pragma omp parallel num_threads(num_threads_for(num_tiles))
  {
    // per-pixel state of the current tile; rows padded to whole vectors (unused lanes are masked)
    const int stride = (ts + kLanes - 1) / kLanes * kLanes;
    const size_t tile_pixels = static_cast<size_t>(stride) * ts;
    std::vector<float> trans(tile_pixels);
    std::vector<int32_t> plast(tile_pixels), done(tile_pixels);
    // Few channels: colours accumulate channel-major, 8 pixels per vector operation. Many
    // channels: per blended pixel into the image, vectorised over the channels (the channel-major
    // tile no longer fits the L1 cache, and most lanes of a chunk add nothing).
    const bool channel_major = D <= kChannelMajorMax;
    std::vector<float> color(channel_major ? tile_pixels * static_cast<size_t>(D) : 0);  // [D][pixels]
    std::vector<float> w_buf(static_cast<size_t>(stride));  // blend weights of a row (0: not blended)
    float* wv = w_buf.data();
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < num_tiles; ++t) {
      const int tx0 = static_cast<int>(t % tiles_x) * ts, ty0 = static_cast<int>(t / tiles_x) * ts;
      const int tx1 = std::min(W, tx0 + ts), ty1 = std::min(H, ty0 + ts);
      const int tw = tx1 - tx0, th = ty1 - ty0;
      const int64_t start = rg[2 * t], end = rg[2 * t + 1];
      int alive = tw * th;
      std::fill(trans.begin(), trans.end(), 1.0f);
      std::fill(plast.begin(), plast.end(), static_cast<int32_t>(start));
      std::fill(done.begin(), done.end(), 0);
      if (channel_major) {
        std::fill(color.begin(), color.end(), 0.0f);
      } else {
        for (int y = ty0; y < ty1; ++y) {
          std::memset(img + (static_cast<int64_t>(y) * W + tx0) * D, 0, sizeof(float) * tw * D);
        }
      }
      for (int64_t k = start; k < end && alive > 0; ++k) {
        if (k + kPrefetch < end) prefetch_gaussian(splats, fp, D, id[k + kPrefetch]);
        const int64_t g = id[k];
        const Splat s = splats[g];  // a copy: its fields stay in registers (no aliasing with the stores)
        if (s.empty) continue;
        int y0, y1;
        splat_rows(s, ty0, ty1, &y0, &y1);
        const float* f = fp + g * D;
        const int32_t next_last = static_cast<int32_t>(k + 1);
        for (int y = y0; y < y1; ++y) {
          const float dy = s.my - (static_cast<float>(y) + 0.5f);
          int x0, x1;
          if (!splat_span(s, dy, tx0, tx1, &x0, &x1)) continue;
          const int s0 = x0 - tx0, s1 = x1 - tx0;  // span in tile columns
          int i0, i1;
          lane_range(s0, s1, &i0, &i1);
          const int row = (y - ty0) * stride;
          float* tr = trans.data() + row;
          int32_t* dn = done.data() + row;
          int32_t* pl = plast.data() + row;
          vi8 stopped8 = bcast_i(0), any8 = bcast_i(0);
          const vi8 iota = {0, 1, 2, 3, 4, 5, 6, 7};
          for (int c = i0; c < i1; c += kLanes) {  // one step of the blending loop, 8 pixels at a time
            const vi8 lane = iota + bcast_i(c);
            vf8 dx;
            const vf8 power = splat_power8(s, tx0 + c, dy, &dx);
            const vf8 v = bcast(s.op) * fast_exp8(power);
            const vf8 a = select_f(v < bcast(kAlphaMax), v, bcast(kAlphaMax));  // min(0.99, v)
            const vf8 tp = load_f(tr + c);
            const vf8 next_t = tp * (bcast(1.0f) - a);
            const vi8 dn8 = load_i(dn + c);
            // outside the span, power > 0 (or NaN), alpha < 1/255 and stopped pixels all skip
            const vi8 used = (lane >= bcast_i(s0)) & (lane < bcast_i(s1)) & (power <= bcast(0.0f)) &
                             (a >= bcast(kAlphaMin)) & (dn8 == bcast_i(0));
            const vi8 stop = used & (next_t < bcast(kMinTransmittance));  // not blended; the pixel is done
            const vi8 blend = used & ~stop;
            stopped8 -= stop;  // true lanes are -1
            store_i(dn + c, dn8 | (stop & bcast_i(1)));
            store_f(tr + c, select_f(blend, next_t, tp));
            store_i(pl + c, select_i(blend, bcast_i(next_last), load_i(pl + c)));
            // blend weight alpha T (>= 1/255 * 1e-4 when blended, 0 otherwise); a zero weight adds
            // +-0 to the colour, which leaves it unchanged
            const vf8 w = select_f(blend, a * tp, bcast(0.0f));
            if (!channel_major) {
              store_f(wv + c, w);
              any8 |= blend;
            } else if (lane_sum(blend) != 0) {
              float* col = color.data() + row + c;
              for (int64_t d = 0; d < D; ++d, col += tile_pixels) store_f(col, load_f(col) + bcast(f[d]) * w);
            }
          }
          alive -= lane_sum(stopped8);
          if (channel_major || lane_sum(any8) == 0) continue;
          float* out = img + (static_cast<int64_t>(y) * W + x0) * D;
          for (int i = s0; i < s1; ++i, out += D) {
            const float w = wv[i];
            if (w == 0.0f) continue;
            for (int64_t d = 0; d < D; ++d) out[d] += f[d] * w;
          }
        }
      }
      for (int y = ty0; y < ty1; ++y) {
        for (int x = tx0; x < tx1; ++x) {
          const int p = (y - ty0) * stride + (x - tx0);
          const int64_t pix = static_cast<int64_t>(y) * W + x;
          const float tp = trans[p];
          float* out = img + pix * D;
          if (channel_major) {
            for (int64_t d = 0; d < D; ++d) out[d] = color[d * tile_pixels + p] + tp * bg[d];
          } else {
            for (int64_t d = 0; d < D; ++d) out[d] += tp * bg[d];
          }
          alp[pix] = 1.0f - tp;
          fin[pix] = tp;
          lst[pix] = plast[p];
        }
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rasterize_forward(
    const at::Tensor& means, const at::Tensor& conics, const at::Tensor& opac, const at::Tensor& features,
    const at::Tensor& background, const at::Tensor& ids, const at::Tensor& ranges, int64_t width, int64_t height,
    int64_t tile_size) {
  const Geometry geo = check_common(means, conics, opac, features, background, ids, ranges, width, height, tile_size);
  const int64_t D = features.size(1);
  const auto fopt = means.options();
  at::Tensor image = at::empty({height, width, D}, fopt);
  at::Tensor alpha = at::empty({height, width, 1}, fopt);
  at::Tensor final_t = at::empty({height, width}, fopt);
  at::Tensor last = at::empty({height, width}, fopt.dtype(at::kInt));
  if (geo.num_tiles == 0) return {image, alpha, final_t, last};

  const float* mp = means.const_data_ptr<float>();
  const float* cp = conics.const_data_ptr<float>();
  const float* op = opac.const_data_ptr<float>();
  const float* fp = features.const_data_ptr<float>();
  const float* bg = background.const_data_ptr<float>();
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const int64_t* rg = ranges.const_data_ptr<int64_t>();
  float* img = image.mutable_data_ptr<float>();
  float* alp = alpha.mutable_data_ptr<float>();
  float* fin = final_t.mutable_data_ptr<float>();
  int32_t* lst = last.mutable_data_ptr<int32_t>();
  const int W = static_cast<int>(width), H = static_cast<int>(height), ts = static_cast<int>(tile_size);
  const int64_t tiles_x = geo.tiles_x, num_tiles = geo.num_tiles;

  const std::vector<Splat> splats = make_splats(mp, cp, op, means.size(0));
  const ForwardArgs args{splats.data(), fp, bg, id, rg, img, alp, fin, lst, W, H, ts, tiles_x, num_tiles, D};
  dispatch_channels(D, [&](auto dt) { forward_tiles<decltype(dt)::value>(args); });
  return {image, alpha, final_t, last};
}

// ----------------------------------------------------------------------------------- backward

struct BackwardArgs {
  const Splat* splats;
  const float* fp;
  const float* bg;
  const int64_t* id;
  const int64_t* rg;
  const float* fin;
  const int32_t* lst;
  const float* gimg;
  const float* galp;
  float* ent;
  int W, H, ts;
  int64_t tiles_x, num_tiles, D, row_len;
};

template <int DT>
void backward_tiles(const BackwardArgs& args) {
  const Splat* splats = args.splats;
  const float* fp = args.fp;
  const float* bg = args.bg;
  const int64_t* id = args.id;
  const int64_t* rg = args.rg;
  const float* fin = args.fin;
  const int32_t* lst = args.lst;
  const float* gimg = args.gimg;
  const float* galp = args.galp;
  float* ent = args.ent;
  const int W = args.W, H = args.H, ts = args.ts;
  const int64_t tiles_x = args.tiles_x, num_tiles = args.num_tiles, row_len = args.row_len;
  const int64_t D = DT > 0 ? DT : args.D;

#pragma omp parallel num_threads(num_threads_for(num_tiles))
  {
    const int stride = (ts + kLanes - 1) / kLanes * kLanes;  // rows padded to whole vectors
    const size_t tile_pixels = static_cast<size_t>(stride) * ts;
    std::vector<float> trans(tile_pixels);  // T_{k+1} while walking back
    std::vector<float> acc(tile_pixels);    // <grad_image, everything behind k incl. background * final_T>
    std::vector<float> dl_dT(tile_pixels);  // grad_alpha * final_T (d loss / d alpha_k = ... + this / (1 - alpha_k))
    std::vector<int32_t> plast(tile_pixels);
    std::vector<float> grad_t(tile_pixels * static_cast<size_t>(D));  // grad_image, channel-major [D][pixels]
    std::vector<float> gfeat8(static_cast<size_t>(D) * kLanes);       // per-lane feature gradient of entry k
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < num_tiles; ++t) {
      const int tx0 = static_cast<int>(t % tiles_x) * ts, ty0 = static_cast<int>(t / tiles_x) * ts;
      const int tx1 = std::min(W, tx0 + ts), ty1 = std::min(H, ty0 + ts);
      const int64_t start = rg[2 * t], end = rg[2 * t + 1];
      // padding lanes: never blended (plast = start), finite state
      std::fill(plast.begin(), plast.end(), static_cast<int32_t>(start));
      std::fill(trans.begin(), trans.end(), 1.0f);
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(dl_dT.begin(), dl_dT.end(), 0.0f);
      std::fill(grad_t.begin(), grad_t.end(), 0.0f);
      int64_t kmax = start;
      for (int y = ty0; y < ty1; ++y) {
        for (int x = tx0; x < tx1; ++x) {
          const int p = (y - ty0) * stride + (x - tx0);
          const int64_t pix = static_cast<int64_t>(y) * W + x;
          const float tf = fin[pix];
          const float* gi = gimg + pix * D;
          float s = 0.0f;
          for (int64_t d = 0; d < D; ++d) {
            s += gi[d] * bg[d];
            grad_t[d * tile_pixels + p] = gi[d];
          }
          trans[p] = tf;
          acc[p] = tf * s;
          dl_dT[p] = galp[pix] * tf;
          plast[p] = static_cast<int32_t>(std::max<int64_t>(start, std::min<int64_t>(lst[pix], end)));
          kmax = std::max<int64_t>(kmax, plast[p]);
        }
      }
      for (int64_t k = kmax - 1; k >= start; --k) {
        if (k - kPrefetch >= start) prefetch_gaussian(splats, fp, D, id[k - kPrefetch]);
        const int64_t g = id[k];
        const Splat s = splats[g];  // a copy: its fields stay in registers (no aliasing with the stores)
        if (s.empty) continue;
        int y0, y1;
        splat_rows(s, ty0, ty1, &y0, &y1);
        const float* f = fp + g * D;
        const int32_t kk = static_cast<int32_t>(k);
        const vi8 iota = {0, 1, 2, 3, 4, 5, 6, 7};
        const vf8 zero = bcast(0.0f);
        vf8 g_mx = zero, g_my = zero, g_a = zero, g_b = zero, g_c = zero, g_op = zero;  // per lane
        bool touched = false;
        for (int y = y0; y < y1; ++y) {
          const float dy = s.my - (static_cast<float>(y) + 0.5f);
          int x0, x1;
          if (!splat_span(s, dy, tx0, tx1, &x0, &x1)) continue;
          const int s0 = x0 - tx0, s1 = x1 - tx0;
          int i0, i1;
          lane_range(s0, s1, &i0, &i1);
          const int row = (y - ty0) * stride;
          const vf8 dyv = bcast(dy);
          for (int c = i0; c < i1; c += kLanes) {
            // the forward's arithmetic, so the forward's skip decisions
            const vi8 lane = iota + bcast_i(c);
            vf8 dx;
            const vf8 power = splat_power8(s, tx0 + c, dy, &dx);
            const vf8 e = fast_exp8(power);
            const vf8 v = bcast(s.op) * e;
            const vf8 a_raw = select_f(v < bcast(kAlphaMax), v, bcast(kAlphaMax));
            const int p = row + c;
            const vi8 used = (lane >= bcast_i(s0)) & (lane < bcast_i(s1)) & (power <= zero) &
                             (a_raw >= bcast(kAlphaMin)) & (bcast_i(kk) < load_i(plast.data() + p));
            if (lane_sum(used) == 0) continue;
            if (!touched) {
              std::fill(gfeat8.begin(), gfeat8.end(), 0.0f);
              touched = true;
            }
            const vf8 a = select_f(used, a_raw, zero);  // unused lanes: alpha 0, nothing changes
            const vf8 one_minus = bcast(1.0f) - a;
            const vf8 tk = load_f(trans.data() + p) / one_minus;  // transmittance in front of Gaussian k
            const vf8 w = a * tk;
            vf8 gdotf = zero;
            for (int64_t d = 0; d < D; ++d) {
              const vf8 gd = load_f(grad_t.data() + d * tile_pixels + p);
              gdotf = gdotf + gd * bcast(f[d]);
              float* gf = gfeat8.data() + d * kLanes;
              store_f(gf, load_f(gf) + select_f(used, gd * w, zero));
            }
            const vf8 accv = load_f(acc.data() + p);
            const vf8 dl_da = gdotf * tk - accv / one_minus + load_f(dl_dT.data() + p) / one_minus;
            store_f(acc.data() + p, select_f(used, accv + w * gdotf, accv));
            store_f(trans.data() + p, select_f(used, tk, load_f(trans.data() + p)));
            // clamped alphas (opacity * exp(power) > 0.99) depend on neither opacity nor power
            const vi8 live = used & (v <= bcast(kAlphaMax));
            const vf8 dl_dpow = dl_da * a;
            g_op = g_op + select_f(live, dl_da * e, zero);
            g_mx = g_mx + select_f(live, dl_dpow * -(bcast(s.a) * dx + bcast(s.b) * dyv), zero);
            g_my = g_my + select_f(live, dl_dpow * -(bcast(s.c) * dyv + bcast(s.b) * dx), zero);
            g_a = g_a + select_f(live, dl_dpow * (bcast(-0.5f) * dx * dx), zero);
            g_b = g_b + select_f(live, dl_dpow * -(dx * dyv), zero);
            g_c = g_c + select_f(live, dl_dpow * (bcast(-0.5f) * dyv * dyv), zero);
          }
        }
        if (touched) {
          float* out = ent + k * row_len;
          out[0] = lane_total(g_mx);
          out[1] = lane_total(g_my);
          out[2] = lane_total(g_a);
          out[3] = lane_total(g_b);
          out[4] = lane_total(g_c);
          out[5] = lane_total(g_op);
          for (int64_t d = 0; d < D; ++d) out[kEntryScalars + d] = lane_total(load_f(gfeat8.data() + d * kLanes));
        }
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rasterize_backward(
    const at::Tensor& means, const at::Tensor& conics, const at::Tensor& opac, const at::Tensor& features,
    const at::Tensor& background, const at::Tensor& ids, const at::Tensor& ranges, int64_t width, int64_t height,
    int64_t tile_size, const at::Tensor& final_t, const at::Tensor& last, const at::Tensor& grad_image,
    const at::Tensor& grad_alpha) {
  const Geometry geo = check_common(means, conics, opac, features, background, ids, ranges, width, height, tile_size);
  const int64_t n = means.size(0), D = features.size(1), m = ids.size(0);
  for (const at::Tensor* t : {&final_t, &grad_image, &grad_alpha}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "gaussian rasteriser backward: final_T / grad_image / grad_alpha must be contiguous float32 CPU");
  }
  TORCH_CHECK(last.device().is_cpu() && last.scalar_type() == at::kInt && last.is_contiguous(),
              "last must be a contiguous int32 CPU tensor");
  TORCH_CHECK(final_t.numel() == height * width && last.numel() == height * width, "final_T and last must be [H, W]");
  TORCH_CHECK(grad_image.numel() == height * width * D, "grad_image must be [H, W, D]");
  TORCH_CHECK(grad_alpha.numel() == height * width, "grad_alpha must be [H, W, 1]");

  const auto fopt = means.options();
  at::Tensor grad_means = at::zeros({n, 2}, fopt);
  at::Tensor grad_conics = at::zeros({n, 3}, fopt);
  at::Tensor grad_opac = at::zeros({n}, fopt);
  at::Tensor grad_features = at::zeros({n, D}, fopt);
  if (geo.num_tiles == 0 || m == 0 || n == 0) return {grad_means, grad_conics, grad_opac, grad_features};

  const int64_t row_len = kEntryScalars + D;
  at::Tensor entries = at::zeros({m, row_len}, fopt);  // per tile-list entry, summed over its tile's pixels
  float* ent = entries.mutable_data_ptr<float>();

  const float* mp = means.const_data_ptr<float>();
  const float* cp = conics.const_data_ptr<float>();
  const float* op = opac.const_data_ptr<float>();
  const float* fp = features.const_data_ptr<float>();
  const float* bg = background.const_data_ptr<float>();
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const int64_t* rg = ranges.const_data_ptr<int64_t>();
  const float* fin = final_t.const_data_ptr<float>();
  const int32_t* lst = last.const_data_ptr<int32_t>();
  const float* gimg = grad_image.const_data_ptr<float>();
  const float* galp = grad_alpha.const_data_ptr<float>();
  const int W = static_cast<int>(width), H = static_cast<int>(height), ts = static_cast<int>(tile_size);
  const int64_t tiles_x = geo.tiles_x, num_tiles = geo.num_tiles;

  const std::vector<Splat> splats = make_splats(mp, cp, op, n);
  const BackwardArgs args{splats.data(), fp,   bg, id, rg, fin,       lst, gimg, galp,
                          ent,           W,    H,  ts, tiles_x, num_tiles, D,   row_len};
  dispatch_channels(D, [&](auto dt) { backward_tiles<decltype(dt)::value>(args); });

  // Sum the entries of each Gaussian in increasing k (counting sort by Gaussian id, then one
  // task per Gaussian range): deterministic and independent of the thread count.
  std::vector<int64_t> offsets(static_cast<size_t>(n) + 1, 0);
  for (int64_t k = 0; k < m; ++k) ++offsets[id[k] + 1];
  for (int64_t g = 0; g < n; ++g) offsets[g + 1] += offsets[g];
  std::vector<int64_t> order(static_cast<size_t>(m));
  {
    std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
    for (int64_t k = 0; k < m; ++k) order[cursor[id[k]]++] = k;
  }
  float* gm = grad_means.mutable_data_ptr<float>();
  float* gc = grad_conics.mutable_data_ptr<float>();
  float* go = grad_opac.mutable_data_ptr<float>();
  float* gf = grad_features.mutable_data_ptr<float>();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t stop) {
    for (int64_t g = begin; g < stop; ++g) {
      float* gfg = gf + g * D;
      float sum[kEntryScalars] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t q = offsets[g]; q < offsets[g + 1]; ++q) {
        const float* row = ent + order[q] * row_len;
        for (int i = 0; i < kEntryScalars; ++i) sum[i] += row[i];
        for (int64_t d = 0; d < D; ++d) gfg[d] += row[kEntryScalars + d];
      }
      gm[2 * g] = sum[0];
      gm[2 * g + 1] = sum[1];
      gc[3 * g] = sum[2];
      gc[3 * g + 1] = sum[3];
      gc[3 * g + 2] = sum[4];
      go[g] = sum[5];
    }
  });
  return {grad_means, grad_conics, grad_opac, grad_features};
}

}  // namespace

TORCH_LIBRARY(langfield_gsplat, m) {
  m.def("forward(Tensor means2d, Tensor conics, Tensor opacities, Tensor features, Tensor background, "
        "Tensor gaussian_ids, Tensor tile_ranges, int width, int height, int tile_size) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("backward(Tensor means2d, Tensor conics, Tensor opacities, Tensor features, Tensor background, "
        "Tensor gaussian_ids, Tensor tile_ranges, int width, int height, int tile_size, Tensor final_T, "
        "Tensor last, Tensor grad_image, Tensor grad_alpha) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(langfield_gsplat, CPU, m) {
  m.impl("forward", &rasterize_forward);
  m.impl("backward", &rasterize_backward);
}
