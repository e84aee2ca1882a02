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
            guard let data = fm.contents(atPath: indexURL.path),
                  let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = obj["weight_map"] as? [String: String]
            else { throw CheckpointError(file: indexURL.path, "not a valid index (needs a \"weight_map\" object of strings)") }
            shardNames = Array(Set(map.values)).sorted()
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

    /// Loads a tensor as f32, checking its shape when one is expected.
    public func tensor(_ name: String, shape expected: [Int]? = nil) throws -> Tensor {
        guard let (fi, info) = location[name] else {
            throw CheckpointError(file: directory.path, tensor: name, "missing from the checkpoint")
        }
        if let expected, expected != info.shape {
            throw CheckpointError(file: files[fi].path, tensor: name, "shape \(info.shape), expected \(expected)")
        }
        return try files[fi].tensor(name)
    }

    /// The tensor's stored bytes, unconverted, as an entry for `SafeTensorsWriter` (under `name`, or a new name).
    public func rawEntry(_ name: String, as newName: String? = nil) throws -> SafeTensorsWriter.Entry {
        guard let (fi, info) = location[name] else {
            throw CheckpointError(file: directory.path, tensor: name, "missing from the checkpoint")
        }
        let data = Data(bytes: files[fi].bytes(info), count: info.byteCount)
        return .init(newName ?? name, raw: data, dtype: info.dtype, shape: info.shape)
    }

    public func tensorIfPresent(_ name: String, shape: [Int]? = nil) throws -> Tensor? {
        contains(name) ? try tensor(name, shape: shape) : nil
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
