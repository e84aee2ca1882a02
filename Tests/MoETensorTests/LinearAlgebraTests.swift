import Foundation
import Testing
@testable import MoETensor

func randomTensor(_ shape: [Int], seed: UInt64) -> Tensor {
    var s = seed
    let t = Tensor(zeros: shape)
    for i in 0..<t.count {
        s = s &* 6364136223846793005 &+ 1442695040888963407
        t.data[i] = Float(Int64(bitPattern: s >> 11) % 2000) / 1000 - 1
    }
    return t
}

func naiveLinear(_ x: Tensor, _ w: Tensor) -> [Float] {
    let m = x.rows, k = x.cols, n = w.shape[0]
    var y = [Float](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n { var s: Double = 0; for p in 0..<k { s += Double(x.data[i * k + p]) * Double(w.data[j * k + p]) }; y[i * n + j] = Float(s) } }
    return y
}

@Suite struct MatmulTests {
    @Test func linearMatchesNaiveSmallAndLarge() {
        Compute.configure(threads: 2)
        for (m, k, n) in [(1, 7, 5), (3, 64, 48), (33, 256, 512)] {
            let x = randomTensor([m, k], seed: UInt64(m * 31 + k)), w = randomTensor([n, k], seed: UInt64(n))
            let b = randomTensor([n], seed: 9)
            let y = linear(x, w, bias: b)
            let want = naiveLinear(x, w).enumerated().map { $0.element + b.data[$0.offset % n] }
            #expect(zip(y.array, want).allSatisfy { abs($0 - $1) < 1e-4 }, "\(m)×\(k)×\(n)")
        }
    }

    @Test func matmulTransposes() {
        let a = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [3, 2], values: [7, 8, 9, 10, 11, 12])
        #expect(matmul(a, b).array == [58, 64, 139, 154])
        #expect(matmul(a, a, transposeB: true).array == [14, 32, 32, 77])
        #expect(matmul(a, a, transposeA: true).array == [17, 22, 27, 22, 29, 36, 27, 36, 45])
    }
}

@Suite struct LinearAlgebraTests {
    /// [[3, 0], [4, 5]] has singular values 3√5 and √5 (checkable by hand: AᵀA = [[25, 20], [20, 25]]).
    @Test func svdOfAHandCheckedMatrix() throws {
        let (_, s, _) = try LinearAlgebra.svd(Tensor(shape: [2, 2], values: [3, 0, 4, 5]))
        #expect(abs(s[0] - 3 * Float(5).squareRoot()) < 1e-5 && abs(s[1] - Float(5).squareRoot()) < 1e-5)
    }

    @Test(arguments: [[7, 5], [5, 7], [16, 16]])
    func svdReconstructsAtFullRank(_ shape: [Int]) throws {
        let a = randomTensor(shape, seed: 42)
        let (u, s, vt) = try LinearAlgebra.svd(a)
        let r = min(shape[0], shape[1])
        #expect(u.shape == [shape[0], r] && vt.shape == [r, shape[1]])
        #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 })
        let us = u.copy()
        for i in 0..<shape[0] { for j in 0..<r { us.data[i * r + j] *= s[j] } }
        #expect(matmul(us, vt).maxAbsDifference(a) < 1e-5)
        let utu = matmul(u, u, transposeA: true)
        for i in 0..<r { for j in 0..<r { #expect(abs(utu.data[i * r + j] - (i == j ? 1 : 0)) < 1e-5) } }
    }

    @Test func choleskyFactorsAndRejectsIndefinite() throws {
        let b = randomTensor([6, 6], seed: 3)
        let a = matmul(b, b, transposeB: true)
        for i in 0..<6 { a.data[i * 6 + i] += 0.5 }
        let l = try LinearAlgebra.cholesky(a)
        for i in 0..<6 { for j in (i + 1)..<6 { #expect(l.data[i * 6 + j] == 0) } }
        #expect(matmul(l, l, transposeB: true).maxAbsDifference(a) < 1e-4)
        let indefinite = Tensor(shape: [2, 2], values: [1, 2, 2, 1])
        #expect(throws: TensorError.self) { try LinearAlgebra.cholesky(indefinite) }
    }

    @Test func symmetricEigenDiagonalises() throws {
        let b = randomTensor([5, 5], seed: 11)
        let a = matmul(b, b, transposeB: true)
        let (w, v) = try LinearAlgebra.symmetricEigen(a)
        #expect(zip(w, w.dropFirst()).allSatisfy { $0 <= $1 })
        let av = matmul(a, v)
        for i in 0..<5 { for j in 0..<5 { #expect(abs(av.data[i * 5 + j] - v.data[i * 5 + j] * w[j]) < 1e-4) } }
        // Hand-checkable: [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let (w2, _) = try LinearAlgebra.symmetricEigen(Tensor(shape: [2, 2], values: [2, 1, 1, 2]))
        #expect(abs(w2[0] - 1) < 1e-6 && abs(w2[1] - 3) < 1e-6)
    }

    @Test func solveInvertsAndRejectsSingular() throws {
        let a = Tensor(shape: [2, 2], values: [2, 1, 1, 3])
        let x = try LinearAlgebra.solve(a, Tensor(shape: [2, 1], values: [3, 5]))
        #expect(abs(x.data[0] - 0.8) < 1e-6 && abs(x.data[1] - 1.4) < 1e-6)
        #expect(throws: TensorError.self) { try LinearAlgebra.solve(Tensor(shape: [2, 2], values: [1, 2, 2, 4]), Tensor(shape: [2, 1], values: [1, 1])) }
    }
}
