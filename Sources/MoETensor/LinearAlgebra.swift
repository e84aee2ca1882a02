import CBLAS

/// LAPACK through LAPACKE. Inputs are row-major tensors; results are row-major too.
/// SVD uses gesdd on the column-major view of the transpose (the fast path, swift-stack.md §2).
public enum LinearAlgebra {
    /// Thin SVD A = U · diag(S) · Vᵀ of an m×n matrix: U [m, r], S [r] descending, Vt [r, n], r = min(m, n).
    public static func svd(_ a: Tensor) throws -> (u: Tensor, s: [Float], vt: Tensor) {
        precondition(a.rank == 2)
        let m = a.shape[0], n = a.shape[1], r = min(m, n)
        // Row-major A (m×n) is column-major Aᵀ (n×m). Aᵀ = V Σ Uᵀ, so LAPACK's "U" is V and its "Vᵀ" is Uᵀ.
        let work = a.copy()
        var s = [Float](repeating: 0, count: r)
        let lapU = Tensor(zeros: [r, n])   // column-major n×r: V, read row-major as Vᵀ [r, n]
        let lapVt = Tensor(zeros: [m, r])  // column-major r×m: Uᵀ, read row-major as U [m, r]
        let info = s.withUnsafeMutableBufferPointer { sp in
            LAPACKE_sgesdd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "S")), Int32(n), Int32(m), work.data, Int32(n),
                           sp.baseAddress, lapU.data, Int32(n), lapVt.data, Int32(r))
        }
        if info != 0 { throw TensorError.lapack("sgesdd", info) }
        return (lapVt, s, lapU)
    }

    /// Lower Cholesky factor L of a symmetric positive-definite matrix (A = L Lᵀ).
    public static func cholesky(_ a: Tensor) throws -> Tensor {
        precondition(a.rank == 2 && a.shape[0] == a.shape[1])
        let n = a.shape[0]
        let l = a.copy()
        let info = LAPACKE_spotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "L")), Int32(n), l.data, Int32(n))
        if info != 0 { throw TensorError.lapack("spotrf", info) }
        for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { l.data[i * n + j] = 0 } }
        return l
    }

    /// Eigen-decomposition of a symmetric matrix: ascending eigenvalues and eigenvectors as columns [n, n].
    public static func symmetricEigen(_ a: Tensor) throws -> (values: [Float], vectors: Tensor) {
        precondition(a.rank == 2 && a.shape[0] == a.shape[1])
        let n = a.shape[0]
        let v = a.copy()
        var w = [Float](repeating: 0, count: n)
        let info = w.withUnsafeMutableBufferPointer {
            LAPACKE_ssyevd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "V")), Int8(UInt8(ascii: "L")), Int32(n), v.data, Int32(n), $0.baseAddress)
        }
        if info != 0 { throw TensorError.lapack("ssyevd", info) }
        return (w, v)
    }

    /// Solves A X = B for square A [n, n] and B [n, k].
    public static func solve(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        precondition(a.rank == 2 && a.shape[0] == a.shape[1] && b.shape[0] == a.shape[0])
        let n = a.shape[0], k = b.rank == 1 ? 1 : b.shape[1]
        let lu = a.copy(), x = b.copy()
        var piv = [Int32](repeating: 0, count: n)
        let info = piv.withUnsafeMutableBufferPointer {
            LAPACKE_sgesv(LAPACK_ROW_MAJOR, Int32(n), Int32(k), lu.data, Int32(n), $0.baseAddress, x.data, Int32(k))
        }
        if info != 0 { throw TensorError.lapack("sgesv", info) }
        return x
    }

    // MARK: f64 (whitening works on Gram matrices accumulated in f64)

    /// Lower Cholesky factor of a symmetric positive-definite n×n matrix (row-major, f64), in place;
    /// the upper triangle is zeroed.
    public static func cholesky64(_ a: inout [Double], n: Int) throws {
        let info = a.withUnsafeMutableBufferPointer {
            LAPACKE_dpotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "L")), Int32(n), $0.baseAddress, Int32(n))
        }
        if info != 0 { throw TensorError.lapack("dpotrf", info) }
        for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { a[i * n + j] = 0 } }
    }

    /// Eigenvalues (ascending) of a symmetric n×n f64 matrix.
    public static func symmetricEigenvalues64(_ a: [Double], n: Int) throws -> [Double] {
        var m = a
        var w = [Double](repeating: 0, count: n)
        let info = m.withUnsafeMutableBufferPointer { mp in
            w.withUnsafeMutableBufferPointer { wp in
                LAPACKE_dsyevd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "N")), Int8(UInt8(ascii: "L")), Int32(n), mp.baseAddress, Int32(n), wp.baseAddress)
            }
        }
        if info != 0 { throw TensorError.lapack("dsyevd", info) }
        return w
    }

    /// Inverse of a lower-triangular n×n f64 matrix, in place.
    public static func invertLower64(_ a: inout [Double], n: Int) throws {
        let info = a.withUnsafeMutableBufferPointer {
            LAPACKE_dtrtri(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "L")), Int8(UInt8(ascii: "N")), Int32(n), $0.baseAddress, Int32(n))
        }
        if info != 0 { throw TensorError.lapack("dtrtri", info) }
    }
}
