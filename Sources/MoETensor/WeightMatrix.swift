import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// A weight matrix [rows, cols] in the form it is stored in, read in place: usually a zero-copy view of a
/// memory-mapped checkpoint, whose pages are touched only when the matrix is used. `owner` keeps the memory
/// alive (the mapping, or the f32 `Tensor` the matrix wraps). Element (r, c) is `rowStride`·r + `colStride`·c
/// elements from `base`, so one expert's rows of a fused tensor are a view, and so is a matrix stored transposed
/// and interleaved (gpt-oss's `gate_up_proj` [E, H, 2I]: its gate is every other column, read as rows).
/// Stored as f32, f16, bf16, or MXFP4 (`mxfp4Scales` set: 4-bit codes two per byte from `base`, one 8-bit
/// exponent per 32 elements of a row from `mxfp4Scales`; rows contiguous, `rowStride` a multiple of 32).
///
/// Products with the weights (`multiply`) use MoEPress's batch-invariant kernels (CKernels) in every form, so a
/// token's result never depends on the rest of its batch (strided and MXFP4 matrices are decoded a panel of rows
/// at a time to f32 and go through the same f32 kernel); the input gradient (`multiplyTransposed`, training)
/// uses OpenBLAS.
public struct WeightMatrix: @unchecked Sendable {
    public let dtype: DType
    public let rows: Int
    public let cols: Int
    public let rowStride: Int
    /// Elements between consecutive columns (1 unless the matrix is a transposed view).
    public let colStride: Int
    public let base: UnsafeRawPointer
    /// MXFP4: the exponents (`dtype` is then u8 and `base` holds the packed codes).
    public let mxfp4Scales: UnsafeRawPointer?
    public let owner: AnyObject?

    /// A view of stored elements; `owner` keeps them alive.
    public init(viewing base: UnsafeRawPointer, dtype: DType, rows: Int, cols: Int, rowStride: Int? = nil, colStride: Int = 1,
                owner: AnyObject?) {
        precondition(dtype == .f32 || dtype == .f16 || dtype == .bf16, "weights are f32, f16 or bf16, not \(dtype.rawValue)")
        precondition(rows >= 0 && cols >= 0 && colStride >= 1)
        self.dtype = dtype
        self.rows = rows
        self.cols = cols
        self.rowStride = rowStride ?? cols
        self.colStride = colStride
        self.base = base
        self.mxfp4Scales = nil
        self.owner = owner
    }

    /// An MXFP4 matrix: row r's codes start at `blocks` + r·rowStride/2 bytes, its exponents at `scales` + r·rowStride/32.
    public init(mxfp4Blocks blocks: UnsafeRawPointer, scales: UnsafeRawPointer, rows: Int, cols: Int, rowStride: Int? = nil, owner: AnyObject?) {
        precondition(rows >= 0 && cols >= 0 && cols % 32 == 0 && (rowStride ?? cols) % 32 == 0, "MXFP4 rows are whole blocks of 32")
        self.dtype = .u8
        self.rows = rows
        self.cols = cols
        self.rowStride = rowStride ?? cols
        self.colStride = 1
        self.base = blocks
        self.mxfp4Scales = scales
        self.owner = owner
    }

    /// The f32 matrix held by `tensor` (2-D); training updates it in place.
    public init(_ tensor: Tensor) {
        precondition(tensor.rank == 2, "a weight matrix is 2-D, got \(tensor.shape)")
        self.init(viewing: UnsafeRawPointer(tensor.data), dtype: .f32, rows: tensor.shape[0], cols: tensor.shape[1], owner: tensor)
    }

    public var shape: [Int] { [rows, cols] }
    public var count: Int { rows * cols }
    public var isMXFP4: Bool { mxfp4Scales != nil }
    /// Rows of consecutive elements, `rowStride` apart (what the kernels and byte copies read directly).
    public var hasContiguousRows: Bool { colStride == 1 && !isMXFP4 }
    public var isContiguous: Bool { rowStride == cols && hasContiguousRows }
    /// Bytes of the elements (what reading the matrix once costs).
    public var byteCount: Int { isMXFP4 ? count / 2 + count / 32 : count * dtype.byteSize }
    /// How the elements are stored, for messages and reports ("bf16", "mxfp4").
    public var storageName: String { isMXFP4 ? "mxfp4" : dtype.rawValue.lowercased() }

    /// The f32 tensor this matrix is, when it is one (trainable weights are); nil for stored f16/bf16 weights.
    public var tensor: Tensor? {
        guard dtype == .f32, isContiguous, let t = owner as? Tensor, UnsafeRawPointer(t.data) == base, t.count == count else { return nil }
        return t
    }

    /// Row r's first element (unpacked matrices) or first code byte (MXFP4).
    @inline(__always) public func row(_ r: Int) -> UnsafeRawPointer {
        isMXFP4 ? base + r * rowStride / 2 : base + r * rowStride * dtype.byteSize
    }

    /// Rows [lo, hi), zero-copy. Rows of an f32 tensor are an f32 tensor view (still trainable in place).
    public func rowSlice(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows)
        if dtype == .f32, isContiguous, let t = owner as? Tensor {
            let view = Tensor(viewing: UnsafeMutablePointer(mutating: row(range.lowerBound).assumingMemoryBound(to: Float.self)),
                              shape: [range.count, cols], owner: t)
            return WeightMatrix(view)
        }
        if let s = mxfp4Scales {
            return WeightMatrix(mxfp4Blocks: row(range.lowerBound), scales: s + range.lowerBound * rowStride / 32, rows: range.count, cols: cols,
                                rowStride: rowStride, owner: owner)
        }
        return WeightMatrix(viewing: row(range.lowerBound), dtype: dtype, rows: range.count, cols: cols, rowStride: rowStride,
                            colStride: colStride, owner: owner)
    }

    /// The [rows, cols] matrix whose element (r, c) is element `offset + r·rowStride + c·colStride` of this contiguous
    /// matrix's elements, zero-copy (a part of a fused tensor). Whole rows of an f32 tensor stay a trainable tensor view;
    /// an MXFP4 part must start at a block and have unit column stride.
    public func view(offset: Int, rows n: Int, cols k: Int, rowStride rs: Int, colStride cs: Int = 1) -> WeightMatrix {
        precondition(isContiguous || isMXFP4 && rowStride == cols, "a view is taken of a whole stored tensor")
        precondition(offset >= 0 && (n == 0 || k == 0 || offset + (n - 1) * rs + (k - 1) * cs < count), "view outside the tensor")
        if cs == 1, rs == cols, k == cols, offset % cols == 0 { return rowSlice((offset / cols)..<(offset / cols + n)) }
        if let s = mxfp4Scales {
            precondition(cs == 1 && offset % 32 == 0 && rs % 32 == 0, "MXFP4 parts are whole blocks of rows")
            return WeightMatrix(mxfp4Blocks: base + offset / 2, scales: s + offset / 32, rows: n, cols: k, rowStride: rs, owner: owner)
        }
        return WeightMatrix(viewing: base + offset * dtype.byteSize, dtype: dtype, rows: n, cols: k, rowStride: rs, colStride: cs, owner: owner)
    }

    /// The transpose, zero-copy (a [cols, rows] view of the same elements; not for MXFP4).
    public func transposed() -> WeightMatrix {
        precondition(!isMXFP4, "MXFP4 matrices are read by rows")
        return WeightMatrix(viewing: base, dtype: dtype, rows: cols, cols: rows, rowStride: colStride, colStride: rowStride, owner: owner)
    }

    /// Elements [c0, c0 + n) of row r widened to f32 (exact).
    public func widen(row r: Int, from c0: Int = 0, count n: Int, into dst: UnsafeMutablePointer<Float>) {
        if let s = mxfp4Scales {
            mpk_mxfp4_to_f32(row(r).assumingMemoryBound(to: UInt8.self), (s + r * rowStride / 32).assumingMemoryBound(to: UInt8.self), c0, n, dst)
        } else if colStride == 1 {
            mpk_to_f32(kernelType(dtype), row(r) + c0 * dtype.byteSize, n, dst)
        } else {
            let p = row(r), cs = colStride
            switch dtype {
            case .bf16: let q = p.assumingMemoryBound(to: UInt16.self); for i in 0..<n { dst[i] = Convert.bf16ToFloat(q[(c0 + i) * cs]) }
            case .f16: let q = p.assumingMemoryBound(to: Float16.self); for i in 0..<n { dst[i] = Float(q[(c0 + i) * cs]) }
            default: let q = p.assumingMemoryBound(to: Float.self); for i in 0..<n { dst[i] = q[(c0 + i) * cs] }
            }
        }
    }

    /// Row `r` widened to f32 (exact).
    public func widenRow(_ r: Int, into dst: UnsafeMutablePointer<Float>) { widen(row: r, count: cols, into: dst) }

    /// Rows [r0, r0 + n) widened into a contiguous f32 panel [n, cols]. A strided view is gathered column by column,
    /// so a transposed matrix is read along its stored rows.
    func widenPanel(rows r0: Int, count n: Int, into panel: UnsafeMutablePointer<Float>) {
        if hasContiguousRows || isMXFP4 {
            for i in 0..<n { widen(row: r0 + i, count: cols, into: panel + i * cols) }
            return
        }
        let rs = rowStride, cs = colStride, k = cols
        let p0 = base + r0 * rs * dtype.byteSize
        switch dtype {
        case .bf16:
            let q = p0.assumingMemoryBound(to: UInt16.self)
            for c in 0..<k { for i in 0..<n { panel[i * k + c] = Convert.bf16ToFloat(q[c * cs + i * rs]) } }
        case .f16:
            let q = p0.assumingMemoryBound(to: Float16.self)
            for c in 0..<k { for i in 0..<n { panel[i * k + c] = Float(q[c * cs + i * rs]) } }
        default:
            let q = p0.assumingMemoryBound(to: Float.self)
            for c in 0..<k { for i in 0..<n { panel[i * k + c] = q[c * cs + i * rs] } }
        }
    }

    /// The matrix as a new contiguous f32 tensor [rows, cols] (exact).
    public func float() -> Tensor {
        let t = Tensor(zeros: [rows, cols])
        if rows > 0 { widenPanel(rows: 0, count: rows, into: t.data) }
        return t
    }

    /// y[m, rows] (row stride ldy) = x[m, cols] · selfᵀ, or += with `accumulate`. `parallel` splits the output
    /// columns over the cores when the product is large; callers already inside a parallel loop pass false.
    public func multiply(_ x: UnsafePointer<Float>, m: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool = false,
                         parallel: Bool = true) {
        let n = rows, k = cols
        if m == 0 || n == 0 { return }
        if !hasContiguousRows {
            multiplyDecoded(x, m: m, into: y, ldy: ldy, accumulate: accumulate, parallel: parallel)
            return
        }
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

    /// Rows of a strided or MXFP4 matrix decoded to f32 panels of `decodeRows` and multiplied by the f32 kernel:
    /// the same arithmetic per output as every other form.
    static let decodeRows = 16

    private func multiplyDecoded(_ x: UnsafePointer<Float>, m: Int, into y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool,
                                 parallel: Bool) {
        let n = rows, k = cols
        let ys = SendablePointer(y)
        let body: (Range<Int>) -> Void = { range in
            let panel = UnsafeMutablePointer<Float>.allocate(capacity: Self.decodeRows * k)
            defer { panel.deallocate() }
            var r0 = range.lowerBound
            while r0 < range.upperBound {
                let nb = min(Self.decodeRows, range.upperBound - r0)
                self.widenPanel(rows: r0, count: nb, into: panel)
                mpk_linear(Int32(MPK_F32), x, m, k, panel, nb, k, k, ys + r0, ldy, accumulate ? 1 : 0)
                r0 += nb
            }
        }
        if !parallel || Compute.threads <= 1 || n < 32 { body(0..<n) } else { parallelChunks(n, align: 16, body) }
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
        if dtype == .f32 && hasContiguousRows {
            let w = base.assumingMemoryBound(to: Float.self)
            let big = parallel && m * n * k >= 1 << 18 && k >= 64
            let body: (Range<Int>) -> Void = { r in
                BLAS.gemm(m: m, n: r.count, k: n, alpha: alpha, a: dy, lda: n, b: w + r.lowerBound, ldb: self.rowStride,
                          beta: accumulate ? 1 : 0, c: c + r.lowerBound, ldc: ldx)
            }
            if big { parallelBlocks(k, block: blasColumnBlock, body) } else { body(0..<k) }
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
                    self.widen(row: r0 + r, from: cr.lowerBound, count: cr.count, into: panel.data + r * cr.count)
                }
                BLAS.gemm(m: m, n: cr.count, k: rb, alpha: alpha, a: dy + r0, lda: n, b: panel.data, ldb: cr.count,
                          beta: (accumulate || r0 > 0) ? 1 : 0, c: c + cr.lowerBound, ldc: ldx)
                r0 += rb
            }
        }
        if parallel && m * n * k >= 1 << 18 && k >= 64 { parallelBlocks(k, block: blasColumnBlock, body) } else { body(0..<k) }
    }
}
