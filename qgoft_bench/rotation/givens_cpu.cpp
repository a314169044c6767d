// The Givens tree x @ R on the CPU in one pass over the activations per direction (qgoft_bench/rotation/cpu_kernel.py).
//
// Conventions (docs/DESIGN.md, "The rotation core"): x is (N, d) row vectors, row-major; blocks is (d-1, 2, 2),
// level-major (level 0's pairs first); R = P_(L-1) ... P_0, so x @ R applies level L-1 first, and a level-l block M
// at pair (i, j), i = 2k 2^l, j = i + 2^l, acts on a row as x_i <- M00 x_i + M10 x_j, x_j <- M01 x_i + M11 x_j.
//
// Work is split into tiles of TILE token rows. A tile is loaded once into a coordinate-major scratch buffer
// (coordinate c's TILE values contiguous, so every 2x2 mix is a TILE-wide vector loop), all levels run in cache, and
// the tile is stored once, row-major. The backward loads the saved input and the output gradient the same way,
// recomputes the levels while keeping each level's pair inputs (2 (d-1) TILE numbers), then runs the transposed
// mixes from level 0 up, accumulating the block gradients of its chunk of tiles.
//
// One parallel region per call: the threads take chunks of tiles from an atomic counter, so a thread the OS has
// descheduled (other jobs on the cores) holds up only the chunk it has, not a fixed share. The block gradients are
// summed per chunk, and the chunks' partial sums are added in chunk order by the caller: the result does not
// depend on the thread count or on which thread ran which chunk.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

namespace {

constexpr int64_t TILE = 8;  // token rows per tile: one AVX2 vector of float32 per coordinate

struct Schedule {
  int levels = 0;
  std::vector<int64_t> size;    // pairs at level l: floor(ceil(d / 2^l) / 2)
  std::vector<int64_t> offset;  // level l's first block in the level-major blocks
  explicit Schedule(int64_t d) {
    int64_t offset_sum = 0;
    while ((int64_t(1) << levels) < d) {
      int64_t step = int64_t(1) << levels;
      int64_t active = (d + step - 1) / step;
      size.push_back(active / 2);
      offset.push_back(offset_sum);
      offset_sum += active / 2;
      ++levels;
    }
  }
};

constexpr int64_t CBLOCK = 16;  // coordinates per step of the tile transposition: its stores stay in one small block

template <typename scalar_t>
void load_tile(const scalar_t* __restrict__ src, int64_t rows, int64_t d, scalar_t* __restrict__ buf) {
  for (int64_t c0 = 0; c0 < d; c0 += CBLOCK) {
    const int64_t c1 = std::min(d, c0 + CBLOCK);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t c = c0; c < c1; ++c) buf[c * TILE + t] = src[t * d + c];
    for (int64_t t = rows; t < TILE; ++t)  // padding rows: zero, so they add nothing to the block gradients
      for (int64_t c = c0; c < c1; ++c) buf[c * TILE + t] = scalar_t(0);
  }
}

template <typename scalar_t>
void store_tile(const scalar_t* __restrict__ buf, int64_t rows, int64_t d, scalar_t* __restrict__ dst) {
  for (int64_t c0 = 0; c0 < d; c0 += CBLOCK) {
    const int64_t c1 = std::min(d, c0 + CBLOCK);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t c = c0; c < c1; ++c) dst[t * d + c] = buf[c * TILE + t];
  }
}

// A coordinate's TILE values as one vector (GCC/Clang vector extension: the mixes below compile to SIMD code at
// whatever width the target has, without aliasing doubts about the tile's rows).
template <typename scalar_t>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(TILE * sizeof(float))));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(TILE * sizeof(double))));
};

// x @ R on one tile, level L-1 first; with `save`, each level's pair inputs (u_i, u_j) are kept for the backward.
template <typename scalar_t, typename V = typename VecOf<scalar_t>::type>
void rotate_tile(V* buf, const scalar_t* blocks, const Schedule& s, V* save) {
  for (int l = s.levels - 1; l >= 0; --l) {
    const int64_t step = int64_t(1) << l;
    for (int64_t k = 0; k < s.size[l]; ++k) {
      const int64_t p = s.offset[l] + k, i = 2 * k * step, j = i + step;
      const scalar_t* m = blocks + 4 * p;
      const V a = buf[i], b = buf[j];
      if (save) {
        save[2 * p] = a;
        save[2 * p + 1] = b;
      }
      buf[i] = m[0] * a + m[2] * b;  // x_i <- M00 x_i + M10 x_j
      buf[j] = m[1] * a + m[3] * b;  // x_j <- M01 x_i + M11 x_j
    }
  }
}

// The transposed mixes from level 0 up on one tile's output gradient `g` (turned into the input gradient in place),
// adding the tile's dL/dM, still one number per token row, to `acc` ((d-1) * 4 vectors: M00 M01 M10 M11 per block).
template <typename scalar_t, typename V = typename VecOf<scalar_t>::type>
void rotate_tile_backward(V* g, const scalar_t* blocks, const Schedule& s, const V* save, V* acc) {
  for (int l = 0; l < s.levels; ++l) {
    const int64_t step = int64_t(1) << l;
    for (int64_t k = 0; k < s.size[l]; ++k) {
      const int64_t p = s.offset[l] + k, i = 2 * k * step, j = i + step;
      const scalar_t* m = blocks + 4 * p;
      const V ui = save[2 * p], uj = save[2 * p + 1], a = g[i], b = g[j];
      acc[4 * p] += a * ui;
      acc[4 * p + 1] += b * ui;
      acc[4 * p + 2] += a * uj;
      acc[4 * p + 3] += b * uj;
      g[i] = m[0] * a + m[1] * b;
      g[j] = m[2] * a + m[3] * b;
    }
  }
}

// Runs body(chunk) for chunk = 0 .. chunks-1 on ATen's threads, handing chunks out from an atomic counter.
template <typename Body>
void for_each_chunk(int64_t chunks, const Body& body) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), chunks));
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w)
      for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) body(c);
  });
}

void check(const torch::Tensor& x, const torch::Tensor& blocks) {
  TORCH_CHECK(x.device().is_cpu() && blocks.device().is_cpu(), "givens_cpu: CPU tensors expected");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "givens_cpu: x must be a contiguous (N, d) tensor");
  TORCH_CHECK(blocks.is_contiguous() && blocks.dim() == 3 && blocks.size(0) == x.size(1) - 1 &&
                  blocks.size(1) == 2 && blocks.size(2) == 2,
              "givens_cpu: blocks must be a contiguous (d - 1, 2, 2) tensor");
  TORCH_CHECK(x.scalar_type() == blocks.scalar_type(), "givens_cpu: x and blocks must share a dtype");
}

constexpr int64_t FORWARD_CHUNK_TILES = 8;  // 64 rows per chunk: small enough to balance, large enough to amortise

torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& blocks) {
  check(x, blocks);
  const int64_t n = x.size(0), d = x.size(1);
  auto y = torch::empty_like(x);
  const Schedule s(d);
  const int64_t tiles = (n + TILE - 1) / TILE;
  const int64_t chunks = (tiles + FORWARD_CHUNK_TILES - 1) / FORWARD_CHUNK_TILES;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "givens_cpu_forward", [&] {
    const scalar_t* src = x.data_ptr<scalar_t>();
    const scalar_t* blk = blocks.data_ptr<scalar_t>();
    scalar_t* dst = y.data_ptr<scalar_t>();
    using V = typename VecOf<scalar_t>::type;
    for_each_chunk(chunks, [&](int64_t chunk) {
      std::vector<V> buf(d);
      scalar_t* flat = reinterpret_cast<scalar_t*>(buf.data());  // vector types may alias their elements
      const int64_t last = std::min(tiles, (chunk + 1) * FORWARD_CHUNK_TILES);
      for (int64_t tile = chunk * FORWARD_CHUNK_TILES; tile < last; ++tile) {
        const int64_t r0 = tile * TILE, rows = std::min(TILE, n - r0);
        load_tile(src + r0 * d, rows, d, flat);
        rotate_tile<scalar_t>(buf.data(), blk, s, static_cast<V*>(nullptr));
        store_tile(flat, rows, d, dst + r0 * d);
      }
    });
  });
  return y;
}

constexpr int64_t BACKWARD_CHUNKS = 64;  // fixed, so the block gradients' summation order is fixed too

// Returns (grad_x or an empty tensor, per-chunk block gradients (chunks, d-1, 2, 2): sum over dim 0).
std::vector<torch::Tensor> backward(const torch::Tensor& x, const torch::Tensor& blocks, const torch::Tensor& grad_y,
                                    bool need_x) {
  check(x, blocks);
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.is_contiguous() && grad_y.scalar_type() == x.scalar_type(),
              "givens_cpu: grad_y must be contiguous and shaped and typed like x");
  const int64_t n = x.size(0), d = x.size(1);
  const Schedule s(d);
  const int64_t tiles = (n + TILE - 1) / TILE;
  const int64_t chunks = std::max<int64_t>(1, std::min(BACKWARD_CHUNKS, tiles));
  const int64_t per_chunk = (tiles + chunks - 1) / chunks;
  auto grad_x = need_x ? torch::empty_like(x) : torch::empty({0}, x.options());
  auto partial = torch::zeros({chunks, d - 1, 2, 2}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "givens_cpu_backward", [&] {
    const scalar_t* src = x.data_ptr<scalar_t>();
    const scalar_t* gy = grad_y.data_ptr<scalar_t>();
    const scalar_t* blk = blocks.data_ptr<scalar_t>();
    scalar_t* gx = need_x ? grad_x.data_ptr<scalar_t>() : nullptr;
    scalar_t* acc = partial.data_ptr<scalar_t>();
    using V = typename VecOf<scalar_t>::type;
    for_each_chunk(chunks, [&](int64_t chunk) {
      std::vector<V> buf(d), grad(d), save(2 * (d - 1)), tile_acc(4 * (d - 1), V{});
      scalar_t* flat_buf = reinterpret_cast<scalar_t*>(buf.data());
      scalar_t* flat_grad = reinterpret_cast<scalar_t*>(grad.data());
      const int64_t last = std::min(tiles, (chunk + 1) * per_chunk);
      for (int64_t tile = chunk * per_chunk; tile < last; ++tile) {
        const int64_t r0 = tile * TILE, rows = std::min(TILE, n - r0);
        load_tile(src + r0 * d, rows, d, flat_buf);
        rotate_tile<scalar_t>(buf.data(), blk, s, save.data());
        load_tile(gy + r0 * d, rows, d, flat_grad);
        rotate_tile_backward<scalar_t>(grad.data(), blk, s, save.data(), tile_acc.data());
        if (gx) store_tile(flat_grad, rows, d, gx + r0 * d);
      }
      scalar_t* out = acc + chunk * 4 * (d - 1);  // the chunk's sums over its token rows, in row order per lane
      for (int64_t e = 0; e < 4 * (d - 1); ++e) {
        scalar_t total = 0;
        for (int64_t t = 0; t < TILE; ++t) total += tile_acc[e][t];
        out[e] = total;
      }
    });
  });
  return {grad_x, partial};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "x @ R for contiguous (N, d) x and (d-1, 2, 2) blocks");
  m.def("backward", &backward, "(grad_x, per-chunk grad_blocks) of x @ R");
}
