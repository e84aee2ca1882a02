import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// A weight matrix [rows, cols] in the dtype it is stored in (f32, f16 or bf16), read in place: usually a
/// zero-copy view of a memory-mapped checkpoint, whose pages are touched only when the matrix is used.
/// `owner` keeps the memory alive (the mapping, or the f32 `Tensor` the matrix wraps). Rows are `rowStride`
/// elements apart, so one expert's rows of a fused tensor are a view too.
///
/// Products with the weights (`multiply`) use MoEPress's batch-invariant kernels (CKernels) in every dtype, so a
/// token's result never depends on the rest of its batch; the input gradient (`multiplyTransposed`, training)
/// uses OpenBLAS.
public struct WeightMatrix: @unchecked Sendable {
    public let dtype: DType
    public let rows: Int
    public let cols: Int
    public let rowStride: Int
    public let base: UnsafeRawPointer
    public let owner: AnyObject?

    /// A view of stored elements; `owner` keeps them alive.
    public init(viewing base: UnsafeRawPointer, dtype: DType, rows: Int, cols: Int, rowStride: Int? = nil, owner: AnyObject?) {
        precondition(dtype == .f32 || dtype == .f16 || dtype == .bf16, "weights are f32, f16 or bf16, not \(dtype.rawValue)")
        precondition(rows >= 0 && cols >= 0)
        self.dtype = dtype
        self.rows = rows
        self.cols = cols
        self.rowStride = rowStride ?? cols
        self.base = base
        self.owner = owner
    }

    /// The f32 matrix held by `tensor` (2-D); training updates it in place.
    public init(_ tensor: Tensor) {
        precondition(tensor.rank == 2, "a weight matrix is 2-D, got \(tensor.shape)")
        self.init(viewing: UnsafeRawPointer(tensor.data), dtype: .f32, rows: tensor.shape[0], cols: tensor.shape[1], owner: tensor)
    }

    public var shape: [Int] { [rows, cols] }
    public var count: Int { rows * cols }
    public var isContiguous: Bool { rowStride == cols }
    /// Bytes of the elements (what reading the matrix once costs).
    public var byteCount: Int { count * dtype.byteSize }

    /// The f32 tensor this matrix is, when it is one (trainable weights are); nil for stored f16/bf16 weights.
    public var tensor: Tensor? {
        guard dtype == .f32, isContiguous, let t = owner as? Tensor, UnsafeRawPointer(t.data) == base, t.count == count else { return nil }
        return t
    }

    @inline(__always) public func row(_ r: Int) -> UnsafeRawPointer { base + r * rowStride * dtype.byteSize }

    /// Rows [lo, hi), zero-copy. Rows of an f32 tensor are an f32 tensor view (still trainable in place).
    public func rowSlice(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows)
        if dtype == .f32, isContiguous, let t = owner as? Tensor {
            let view = Tensor(viewing: UnsafeMutablePointer(mutating: row(range.lowerBound).assumingMemoryBound(to: Float.self)),
                              shape: [range.count, cols], owner: t)
            return WeightMatrix(view)
        }
        return WeightMatrix(viewing: row(range.lowerBound), dtype: dtype, rows: range.count, cols: cols, rowStride: rowStride, owner: owner)
    }

    /// Row `r` widened to f32 (exact).
    public func widenRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        mpk_to_f32(kernelType(dtype), row(r), cols, dst)
    }

    /// The matrix as a new contiguous f32 tensor [rows, cols] (exact).
    public func float() -> Tensor {
        let t = Tensor(zeros: [rows, cols])
        for r in 0..<rows { widenRow(r, into: t.data + r * cols) }
        return t
    }

    /// y[m, rows] (row stride ldy) = x[m, cols] · selfᵀ, or += with `accumulate`. `parallel` splits the output
    /// columns over the cores when the product is large; callers already inside a parallel loop pass false.
    public func multiply(_ x: UnsafePointer<Float>, m: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool = false,
                         parallel: Bool = true) {
        let n = rows, k = cols
        if m == 0 || n == 0 { return }
        let t = kernelType(dtype), stride = rowStride, es = dtype.byteSize, b = base
        // Decode reads every weight once, so both cores stream it; bigger products split when worth it.
        if !parallel || Compute.threads <= 1 || n < 32 || m * n * k < 1 << 16 {
            mpk_linear(t, x, m, k, b, n, stride, k, y, ldy, accumulate ? 1 : 0)
            return
        }
        let ys = SendablePointer(y)
        parallelChunks(n, align: 16) { r in
            mpk_linear(t, x, m, k, b + r.lowerBound * stride * es, r.count, stride, k, ys + r.lowerBound, ldy, accumulate ? 1 : 0)
        }
    }

    /// dx[m, cols] (row stride ldx) = dy[m, rows] · self, or += with `accumulate` (the input gradient of a
    /// linear layer). f16/bf16 weights are widened a block of rows at a time.
    public func multiplyTransposed(_ dy: UnsafePointer<Float>, m: Int, into dx: UnsafeMutablePointer<Float>, ldx: Int,
                                   accumulate: Bool = false, alpha: Float = 1, parallel: Bool = true) {
        let n = rows, k = cols
        if m == 0 || k == 0 { return }
        if n == 0 {
            if !accumulate { for i in 0..<m { (dx + i * ldx).update(repeating: 0, count: k) } }
            return
        }
        let c = SendablePointer(dx)
        if dtype == .f32 {
            let w = base.assumingMemoryBound(to: Float.self)
            let big = parallel && m * n * k >= 1 << 18 && k >= 64
            let body: (Range<Int>) -> Void = { r in
                BLAS.gemm(m: m, n: r.count, k: n, alpha: alpha, a: dy, lda: n, b: w + r.lowerBound, ldb: self.rowStride,
                          beta: accumulate ? 1 : 0, c: c + r.lowerBound, ldc: ldx)
            }
            if big { parallelChunks(k, align: 16, body) } else { body(0..<k) }
            return
        }
        // Σ over blocks of weight rows: dx (+)= dy[:, block] · widen(W[block, :]); blocks of up to 8 MiB of f32, so a
        // layer-sized matrix is one GEMM and a large one never exists widened whole.
        let block = max(64, min(n, (8 << 20) / max(1, k * 4)))
        let body: (Range<Int>) -> Void = { cr in
            let panel = Tensor(zeros: [min(block, n), cr.count])
            var r0 = 0
            while r0 < n {
                let rb = min(block, n - r0)
                for r in 0..<rb {
                    mpk_to_f32(kernelType(self.dtype), self.row(r0 + r) + cr.lowerBound * self.dtype.byteSize, cr.count, panel.data + r * cr.count)
                }
                BLAS.gemm(m: m, n: cr.count, k: rb, alpha: alpha, a: dy + r0, lda: n, b: panel.data, ldb: cr.count,
                          beta: (accumulate || r0 > 0) ? 1 : 0, c: c + cr.lowerBound, ldc: ldx)
                r0 += rb
            }
        }
        if parallel && m * n * k >= 1 << 18 && k >= 64 { parallelChunks(k, align: 16, body) } else { body(0..<k) }
    }
}
