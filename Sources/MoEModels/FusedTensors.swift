import MoETensor
import MoECheckpoint

/// Writing a fused expert tensor (gpt-oss's `gate_up_proj` [E, H, 2I], its biases, …) from the per-expert
/// parameters that are parts of it (`TensorLocation.Part`). Every part of expert e lies in the tensor's e-th slab
/// (its first dimension is the expert), so the writer builds one slab at a time, when the output reaches it:
/// memory holds one expert's share of the tensor, never the tensor.
public enum FusedTensors {
    /// One output tensor: its name, full shape and the parts that fill it, each with its element count and a
    /// function giving its values (called when the writer reaches its expert, so nothing is computed ahead).
    public struct Group {
        public var name: String
        public var shape: [Int]
        public var parts: [(part: TensorLocation.Part, count: Int, values: @Sendable () -> Tensor)] = []
        public init(name: String, shape: [Int]) { self.name = name; self.shape = shape }

        public mutating func add(_ part: TensorLocation.Part, _ value: Parameter) {
            let box = UncheckedBox(value)
            parts.append((part, value.count, { box.value.float() }))
        }
    }

    final class UncheckedBox<T>: @unchecked Sendable {
        let value: T
        init(_ value: T) { self.value = value }
    }

    /// A writer entry producing `group`'s tensor in `dtype`, slab by slab. Throws when the parts do not cover
    /// the tensor exactly once.
    public static func entry(_ group: Group, dtype: DType) throws -> SafeTensorsWriter.Entry {
        guard let experts = group.shape.first, experts > 0 else { throw ModelError.invalidConfig("\(group.name): a fused tensor needs an expert dimension") }
        let slab = group.shape.dropFirst().reduce(1, *)
        var byExpert = [[(TensorLocation.Part, @Sendable () -> Tensor)]](repeating: [], count: experts)
        var covered = 0
        for (p, n, v) in group.parts {
            let e = p.offset / slab
            guard e < experts else { throw ModelError.invalidConfig("\(group.name): a part starts past the tensor") }
            byExpert[e].append((p, v))
            covered += n
        }
        guard covered == experts * slab else {
            throw ModelError.invalidConfig("\(group.name): the parameters cover \(covered) of its \(experts * slab) elements")
        }
        let cache = SlabCache(byExpert: byExpert, slab: slab)
        let es = dtype.byteSize
        return SafeTensorsWriter.Entry(group.name, dtype: dtype, shape: group.shape) { byteOffset, piece in
            var element = byteOffset / es, done = 0
            let total = piece.count / es
            while done < total {
                let e = element / slab, start = element % slab
                let n = min(slab - start, total - done)
                let values = cache.slab(e)
                Convert.fromFloat(values.data + start, count: n, dtype: dtype, into: piece.baseAddress! + done * es)
                element += n; done += n
            }
        }
    }

    /// The last slab built (the writer asks for bytes in order, so each slab is built once).
    final class SlabCache: @unchecked Sendable {
        let byExpert: [[(TensorLocation.Part, @Sendable () -> Tensor)]]
        let slab: Int
        var current: (expert: Int, values: Tensor)?

        init(byExpert: [[(TensorLocation.Part, @Sendable () -> Tensor)]], slab: Int) { self.byExpert = byExpert; self.slab = slab }

        func slab(_ e: Int) -> Tensor {
            if let c = current, c.expert == e { return c.values }
            let t = Tensor(zeros: [slab])
            for (p, v) in byExpert[e] {
                let values = v()
                let rows = values.rank == 2 ? values.shape[0] : values.count, cols = values.rank == 2 ? values.shape[1] : 1
                let base = p.offset - e * slab
                for r in 0..<rows {
                    for c in 0..<cols { t.data[base + r * p.rowStride + c * p.colStride] = values.data[r * cols + c] }
                }
            }
            current = (e, t)
            return t
        }
    }
}
