import Foundation
import MoETensor

/// A Hugging Face model folder: config.json plus one `model.safetensors`, or shards listed in
/// `model.safetensors.index.json` (falling back to every `*.safetensors` in the folder).
public final class Checkpoint: @unchecked Sendable {
    public let directory: URL
    public let files: [SafeTensorsFile]
    private let location: [String: (file: Int, info: TensorInfo)]
    /// Tensor names, sorted.
    public let names: [String]

    public init(directory: URL) throws {
        self.directory = directory
        let fm = FileManager.default
        let dir = directory.path
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw CheckpointError(file: dir, "not a model folder (it does not exist or is not a directory)")
        }
        var shardNames: [String]
        let indexURL = directory.appendingPathComponent("model.safetensors.index.json")
        if fm.fileExists(atPath: indexURL.path) {
            guard let data = fm.contents(atPath: indexURL.path) else { throw CheckpointError(file: indexURL.path, "cannot read") }
            guard let map = try JSONValue.parse(data, file: indexURL.path).object?["weight_map"]?.object,
                  case let shards = map.values.compactMap(\.string), shards.count == map.count
            else { throw CheckpointError(file: indexURL.path, "not a valid index (needs a \"weight_map\" object of strings)") }
            shardNames = Array(Set(shards)).sorted()
            for s in shardNames where s.contains("/") || s.hasPrefix(".") {
                throw CheckpointError(file: indexURL.path, "shard name \"\(s)\" points outside the model folder")
            }
        } else if fm.fileExists(atPath: directory.appendingPathComponent("model.safetensors").path) {
            shardNames = ["model.safetensors"]
        } else {
            shardNames = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".safetensors") }.sorted()
        }
        guard !shardNames.isEmpty else { throw CheckpointError(file: dir, "no *.safetensors weights in the model folder") }
        var files: [SafeTensorsFile] = []
        var loc: [String: (Int, TensorInfo)] = [:]
        for (i, name) in shardNames.enumerated() {
            let f = try SafeTensorsFile(path: directory.appendingPathComponent(name).path)
            for t in f.tensors {
                if loc[t.name] != nil {
                    throw CheckpointError(file: f.path, tensor: t.name, "also stored in \(files[loc[t.name]!.0].path)")
                }
                loc[t.name] = (i, t)
            }
            files.append(f)
        }
        self.files = files
        self.location = loc
        self.names = loc.keys.sorted()
    }

    public func contains(_ name: String) -> Bool { location[name] != nil }
    public func info(_ name: String) -> TensorInfo? { location[name]?.info }

    /// The file holding `name`, checking the tensor's shape when one is expected.
    private func file(of name: String, shape expected: [Int]?) throws -> SafeTensorsFile {
        guard let (fi, info) = location[name] else {
            throw CheckpointError(file: directory.path, tensor: name, "missing from the checkpoint")
        }
        if let expected, expected != info.shape {
            throw CheckpointError(file: files[fi].path, tensor: name, "shape \(info.shape), expected \(expected)")
        }
        return files[fi]
    }

    /// Loads a tensor as f32, checking its shape when one is expected.
    public func tensor(_ name: String, shape expected: [Int]? = nil) throws -> Tensor {
        try file(of: name, shape: expected).tensor(name)
    }

    /// A weight matrix in its stored dtype (see `SafeTensorsFile.weight`), checking its shape when one is expected.
    public func weight(_ name: String, shape expected: [Int]? = nil) throws -> WeightMatrix {
        try file(of: name, shape: expected).weight(name)
    }

    /// An MXFP4 matrix stored as `blocks` [..., cols/32, 16] and `scales` [..., cols/32] (both U8), read in place as
    /// [rows, cols] with rows the product of the leading dimensions, which must equal `leading`.
    public func mxfp4Weight(blocks: String, scales: String, leading: [Int], cols: Int) throws -> WeightMatrix {
        guard cols % 32 == 0 else { throw CheckpointError(file: directory.path, tensor: blocks, "MXFP4 rows of \(cols) values are not whole blocks of 32") }
        let bf = try file(of: blocks, shape: leading + [cols / 32, 16]), sf = try file(of: scales, shape: leading + [cols / 32])
        let bi = bf.info(blocks)!, si = sf.info(scales)!
        for (f, i, n) in [(bf, bi, blocks), (sf, si, scales)] where i.dtype != .u8 {
            throw CheckpointError(file: f.path, tensor: n, "dtype \(i.dtype.rawValue); MXFP4 blocks and scales are U8")
        }
        let owner = KeepAlive([bf.mapping, sf.mapping])
        return WeightMatrix(mxfp4Blocks: bf.bytes(bi), scales: sf.bytes(si), rows: leading.reduce(1, *), cols: cols, owner: owner)
    }

    /// The file holding `name` and the tensor's byte range in it.
    public func location(of name: String) -> (file: SafeTensorsFile, offset: Int, count: Int)? {
        guard let (fi, info) = location[name] else { return nil }
        return (files[fi], files[fi].dataOffset + info.begin, info.byteCount)
    }

    /// Hints the kernel about the bytes of the named tensors: read them ahead, or drop them from memory.
    public func advise(_ advice: MappedFile.Advice, tensors: [String]) {
        for name in tensors {
            guard let (f, off, n) = location(of: name) else { continue }
            f.mapping.advise(advice, offset: off, count: n)
        }
    }

    /// The tensor's stored bytes, unconverted and not copied (written straight from the mapping), as an entry
    /// for `SafeTensorsWriter` (under `name`, or a new name).
    public func rawEntry(_ name: String, as newName: String? = nil) throws -> SafeTensorsWriter.Entry {
        guard let (fi, info) = location[name] else {
            throw CheckpointError(file: directory.path, tensor: name, "missing from the checkpoint")
        }
        let bytes = UnsafeRawBufferPointer(start: files[fi].bytes(info), count: info.byteCount)
        return .init(newName ?? name, mapped: [bytes], owner: files[fi].mapping, dtype: info.dtype, shape: info.shape)
    }

    /// Rows `rows` (in that order) of the tensor's first dimension, unconverted and not copied: a pruned router
    /// or fused expert tensor keeps the kept experts' rows.
    public func rowsEntry(_ name: String, rows: [Int]) throws -> SafeTensorsWriter.Entry {
        guard let (fi, info) = location[name] else {
            throw CheckpointError(file: directory.path, tensor: name, "missing from the checkpoint")
        }
        guard let first = info.shape.first, first > 0 else { throw CheckpointError(file: files[fi].path, tensor: name, "has no rows to select") }
        let row = info.byteCount / first
        let base = files[fi].bytes(info)
        let pieces = try rows.map { r -> UnsafeRawBufferPointer in
            guard r >= 0 && r < first else { throw CheckpointError(file: files[fi].path, tensor: name, "has no row \(r) (first dimension \(first))") }
            return UnsafeRawBufferPointer(start: base + r * row, count: row)
        }
        var shape = info.shape
        shape[0] = rows.count
        return .init(name, mapped: pieces, owner: files[fi].mapping, dtype: info.dtype, shape: shape)
    }

    public func tensorIfPresent(_ name: String, shape: [Int]? = nil) throws -> Tensor? {
        contains(name) ? try tensor(name, shape: shape) : nil
    }

    /// The first tensor (in name order) holding a NaN or an infinity, with the flat index of that value; nil
    /// when every floating-point weight is finite. Reads the stored bits (f32, f16, bf16) without widening,
    /// one tensor at a time; `progress` hears of each tensor's bytes.
    public func firstNonFinite(evict: Bool = false, progress: ((Int) -> Void)? = nil) -> (name: String, index: Int)? {
        for name in names.sorted() {
            guard let l = location[name] else { continue }
            let p = files[l.file].bytes(l.info)
            let n = l.info.elementCount
            var bad: Int? = nil
            switch l.info.dtype {
            case .f32:
                let u = p.assumingMemoryBound(to: UInt32.self)
                for i in 0..<n where u[i] & 0x7F80_0000 == 0x7F80_0000 { bad = i; break }
            case .bf16:
                let u = p.assumingMemoryBound(to: UInt16.self)
                for i in 0..<n where u[i] & 0x7F80 == 0x7F80 { bad = i; break }
            case .f16:
                let u = p.assumingMemoryBound(to: UInt16.self)
                for i in 0..<n where u[i] & 0x7C00 == 0x7C00 { bad = i; break }
            default: break
            }
            if evict { advise(.evict, tensors: [name]) }
            progress?(l.info.byteCount)
            if let bad { return (name, bad) }
        }
        return nil
    }

    /// Refuses weights holding NaN or infinities, naming the tensor (a model computing on them gives NaN logits).
    public func requireFinite(evict: Bool = false, progress: ((Int) -> Void)? = nil) throws {
        if let (name, i) = firstNonFinite(evict: evict, progress: progress) {
            throw CheckpointError(file: directory.path, tensor: name, "holds a NaN or infinite value (element \(i))")
        }
    }

    /// Bytes of tensor data on disk (headers excluded).
    public var tensorBytes: Int { location.values.reduce(0) { $0 + $1.info.byteCount } }
    /// Bytes of the safetensors files on disk.
    public var fileBytes: Int { files.reduce(0) { $0 + $1.mapping.size } }
    /// The dtype most of the weights are stored in.
    public var dominantDType: DType {
        var bytes: [DType: Int] = [:]
        for v in location.values { bytes[v.info.dtype, default: 0] += v.info.byteCount }
        return bytes.max { $0.value < $1.value }?.key ?? .f32
    }
}

/// Keeps several objects alive as one owner (an MXFP4 matrix's blocks and scales may sit in two files).
final class KeepAlive {
    let objects: [AnyObject]
    init(_ objects: [AnyObject]) { self.objects = objects }
}
