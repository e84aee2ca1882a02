#if canImport(Glibc)
import Glibc
#endif

/// A dense row-major f32 tensor. Reference semantics (like a torch tensor): ops return new tensors,
/// in-place ops say so in their name. Storage is either owned (64-byte aligned) or a zero-copy view
/// into memory kept alive by `owner` (an mmapped checkpoint, or another tensor).
public final class Tensor: @unchecked Sendable {
    public let shape: [Int]
    public let count: Int
    public let data: UnsafeMutablePointer<Float>
    private let owner: AnyObject?
    private let owned: Bool

    /// A zero-filled tensor.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        var raw: UnsafeMutableRawPointer?
        let bytes = max(64, count * MemoryLayout<Float>.stride)
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else { fatalError("out of memory allocating \(bytes) bytes") }
        memset(raw, 0, bytes)
        self.data = raw.bindMemory(to: Float.self, capacity: max(count, 16))
        self.owner = nil
        self.owned = true
    }

    /// A view over `count` floats at `pointer`; `owner` keeps that memory alive.
    public init(viewing pointer: UnsafeMutablePointer<Float>, shape: [Int], owner: AnyObject?) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.data = pointer
        self.owner = owner
        self.owned = false
    }

    public convenience init(shape: [Int], values: [Float]) {
        self.init(zeros: shape)
        precondition(values.count == count, "Tensor(shape: \(shape)) needs \(count) values, got \(values.count)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    /// Converts `count` elements of a stored dtype (possibly unaligned, e.g. an mmapped file) into a new tensor.
    public convenience init(converting src: UnsafeRawPointer, dtype: DType, shape: [Int]) {
        self.init(zeros: shape)
        Convert.toFloat(src, dtype: dtype, count: count, into: data)
    }

    deinit { if owned { free(data) } }

    public var rank: Int { shape.count }
    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }
    public var rows: Int { shape.count <= 1 ? 1 : shape.dropLast().reduce(1, *) }
    public var cols: Int { shape.last ?? 1 }

    @inlinable public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    /// The same memory with another shape of the same size.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let k = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != k }.map(\.element).reduce(1, *)
            s[k] = count / max(known, 1)
        }
        precondition(s.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(viewing: data, shape: s, owner: self)
    }

    /// Rows [lo, hi) along the first dimension, zero-copy.
    public func rowSlice(_ range: Range<Int>) -> Tensor {
        let inner = shape.count <= 1 ? 1 : shape.dropFirst().reduce(1, *)
        var s = shape
        s[0] = range.count
        return Tensor(viewing: data + range.lowerBound * inner, shape: s, owner: self)
    }

    public func copy() -> Tensor {
        let t = Tensor(zeros: shape)
        t.data.update(from: data, count: count)
        return t
    }

    /// Columns [lo, hi) of a 2-D view [rows, cols] as a new contiguous tensor.
    public func columns(_ range: Range<Int>) -> Tensor {
        let r = rows, c = cols
        let out = Tensor(zeros: [r, range.count])
        for i in 0..<r {
            (out.data + i * range.count).update(from: data + i * c + range.lowerBound, count: range.count)
        }
        return out
    }

    /// Stacks tensors of equal trailing shape along a new or the first axis (concatenation of rows).
    public static func concatRows(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty)
        let inner = parts[0].shape.count <= 1 ? 1 : parts[0].shape.dropFirst().reduce(1, *)
        var s = parts[0].shape
        s[0] = parts.reduce(0) { $0 + $1.shape[0] }
        let out = Tensor(zeros: s)
        var off = 0
        for p in parts {
            precondition(p.count == p.shape[0] * inner, "concatRows: mismatched inner shapes")
            (out.data + off).update(from: p.data, count: p.count)
            off += p.count
        }
        return out
    }

    /// The transpose of a 2-D tensor, materialised.
    public func transposed() -> Tensor {
        precondition(rank == 2)
        let r = shape[0], c = shape[1]
        let out = Tensor(zeros: [c, r])
        for i in 0..<r { for j in 0..<c { out.data[j * r + i] = data[i * c + j] } }
        return out
    }

    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(count == other.count, "shape \(shape) vs \(other.shape)")
        var m: Float = 0
        for i in 0..<count { m = max(m, abs(data[i] - other.data[i])) }
        return m
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = array.prefix(6).map { String($0) }.joined(separator: ", ")
        return "Tensor(\(shape)) [\(head)\(count > 6 ? ", …" : "")]"
    }
}

/// Memory a tensor may view that is read-only until asked (a checkpoint file mapped `PROT_READ`).
public protocol WritableMapping: AnyObject {
    /// Makes the memory writable for this process only (copy-on-write); the file is never changed.
    func makeWritable() throws
}

extension Tensor {
    /// Prepares this tensor to be updated in place (training's optimiser step): a view of a read-only mapping makes
    /// that mapping copy-on-write writable. Owned memory, and views of owned memory, are writable already.
    public func prepareForWritesInPlace() throws {
        var o: AnyObject? = owner
        while let t = o as? Tensor { o = t.owner }
        if let m = o as? any WritableMapping { try m.makeWritable() }
    }
}
