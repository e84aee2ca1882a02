import Foundation
import MoETensor

/// Writes safetensors files. Data are written to a temporary file beside the target and renamed
/// into place only when complete, so a crash never leaves a half-written file under the final name.
public enum SafeTensorsWriter {
    public struct Entry {
        public enum Source {
            /// An f32 tensor, narrowed to `dtype` when written.
            case tensor(Tensor)
            /// Bytes already in `dtype` (copied from another file, so unchanged tensors stay bit-identical).
            case raw(Data)
        }
        public let name: String
        public let source: Source
        public let dtype: DType
        public let shape: [Int]

        public init(_ name: String, _ tensor: Tensor, dtype: DType = .f32) {
            self.name = name
            self.source = .tensor(tensor)
            self.dtype = dtype
            self.shape = tensor.shape
        }

        public init(_ name: String, raw: Data, dtype: DType, shape: [Int]) {
            precondition(raw.count == shape.reduce(1, *) * dtype.byteSize, "raw bytes of \(name) do not match \(shape) × \(dtype)")
            self.name = name
            self.source = .raw(raw)
            self.dtype = dtype
            self.shape = shape
        }

        var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
    }

    public static func write(_ entries: [Entry], metadata: [String: String] = ["format": "pt"], to url: URL) throws {
        let sorted = entries.sorted { $0.name < $1.name }
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for e in sorted {
            if case .tensor = e.source, !(e.dtype == .f32 || e.dtype == .f16 || e.dtype == .bf16) {
                throw CheckpointError(file: url.path, tensor: e.name, "cannot write dtype \(e.dtype.rawValue)")
            }
            let n = e.byteCount
            header[e.name] = ["dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + n]] as [String: Any]
            offset += n
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (json.count + 8) % 8 != 0 { json.append(0x20) }  // pad with spaces, as the reference writer does

        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil),
              let handle = FileHandle(forWritingAtPath: tmp.path) else {
            throw CheckpointError(file: tmp.path, "cannot create")
        }
        do {
            var len = UInt64(json.count).littleEndian
            try handle.write(contentsOf: Data(bytes: &len, count: 8))
            try handle.write(contentsOf: json)
            for e in sorted {
                switch e.source {
                case .raw(let d):
                    try handle.write(contentsOf: d)
                case .tensor(let t):
                    var buf = Data(count: e.byteCount)
                    buf.withUnsafeMutableBytes { raw in
                        Convert.fromFloat(t.data, count: t.count, dtype: e.dtype, into: raw.baseAddress!)
                    }
                    try handle.write(contentsOf: buf)
                }
            }
            try handle.synchronize()
            try handle.close()
            if rename(tmp.path, url.path) != 0 {
                throw CheckpointError(file: url.path, "cannot move the finished file into place")
            }
        } catch {
            try? handle.close()
            try? FileManager.default.removeItem(at: tmp)
            throw error
        }
    }
}

/// An output folder built under a temporary name and renamed into place when complete. Inputs are
/// never touched; if the work fails the temporary folder is removed and nothing appears.
public struct AtomicDirectory {
    public let final: URL
    public let staging: URL

    public init(_ final: URL, overwrite: Bool = false) throws {
        self.final = final.standardizedFileURL
        let fm = FileManager.default
        if fm.fileExists(atPath: self.final.path) && !overwrite {
            throw CheckpointError(file: self.final.path, "already exists (pass --overwrite to replace it)")
        }
        let parent = self.final.deletingLastPathComponent()
        try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        staging = parent.appendingPathComponent(".\(self.final.lastPathComponent).partial-\(getpid())")
        try? fm.removeItem(at: staging)
        try fm.createDirectory(at: staging, withIntermediateDirectories: false)
    }

    public func url(_ name: String) -> URL { staging.appendingPathComponent(name) }

    /// Moves the staging folder to its final name (replacing an older one when allowed).
    public func commit() throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
        guard rename(staging.path, final.path) == 0 else {
            throw CheckpointError(file: final.path, "cannot move the finished output into place")
        }
    }

    public func abandon() { try? FileManager.default.removeItem(at: staging) }

    /// Runs `body` in the staging folder, then commits; abandons on error.
    public static func write(_ final: URL, overwrite: Bool = false, _ body: (AtomicDirectory) throws -> Void) throws {
        let d = try AtomicDirectory(final, overwrite: overwrite)
        do {
            try body(d)
            try d.commit()
        } catch {
            d.abandon()
            throw error
        }
    }
}
