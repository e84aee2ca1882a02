import Foundation
import MoETensor
#if canImport(Glibc)
import Glibc
#endif

/// A safetensors file whose layout is fixed up front and whose data are written in place through a shared
/// mapping, a row block at a time, by whoever computes them: a calibration layer's activations go straight
/// to the page cache and the disk, never into anonymous memory. The file is built under a temporary name
/// beside the target and renamed by `commit()`; dropped without commit, it is deleted.
public final class MappedSafeTensorsOutput: @unchecked Sendable {
    public let url: URL
    let tmp: URL
    let base: UnsafeMutableRawPointer
    let size: Int
    let dataStart: Int
    var fd: Int32
    var committed = false
    let layout: [String: (dtype: DType, shape: [Int], offset: Int)]

    public init(_ url: URL, tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String] = [:]) throws {
        self.url = url
        for t in tensors where !(t.dtype == .f32 || t.dtype == .f16 || t.dtype == .bf16) {
            throw CheckpointError(file: url.path, tensor: t.name, "cannot write dtype \(t.dtype.rawValue) in place")
        }
        let sorted = tensors.sorted { SafeTensorsWriter.naturalOrder($0.name, $1.name) }
        let (json, offsets) = try SafeTensorsWriter.header(sorted, metadata: metadata, file: url.path)
        var l: [String: (DType, [Int], Int)] = [:]
        for (t, o) in zip(sorted, offsets) { l[t.name] = (t.dtype, t.shape, o) }
        layout = l
        dataStart = 8 + json.count
        size = dataStart + sorted.reduce(0) { $0 + $1.shape.reduce(1, *) * $1.dtype.byteSize }
        tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        fd = open(tmp.path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CheckpointError(file: tmp.path, "cannot create (\(String(cString: strerror(errno))))") }
        do { try reserveBlocks(fd, bytes: size, path: url.path) } catch { close(fd); unlink(tmp.path); throw error }
        guard ftruncate(fd, off_t(size)) == 0, let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            let why = String(cString: strerror(errno))
            close(fd)
            unlink(tmp.path)
            throw CheckpointError(file: tmp.path, "cannot size and map \(formatBytes(size)) (\(why))")
        }
        base = p
        base.storeBytes(of: UInt64(json.count).littleEndian, as: UInt64.self)
        json.withUnsafeBytes { (base + 8).copyMemory(from: $0.baseAddress!, byteCount: json.count) }
    }

    deinit {
        munmap(base, size)
        if fd >= 0 { close(fd) }
        if !committed { unlink(tmp.path) }
    }

    /// Writes `rows` rows of f32 values into tensor `name` from row `row` on (narrowed to its dtype).
    public func write(_ name: String, row: Int, from src: UnsafePointer<Float>, rows: Int) {
        guard let t = layout[name] else { preconditionFailure("\(url.lastPathComponent) has no tensor \(name)") }
        let cols = t.shape.count <= 1 ? 1 : t.shape.dropFirst().reduce(1, *)
        precondition(row >= 0 && row + rows <= (t.shape.first ?? 1), "rows out of range for \(name)")
        Convert.fromFloat(src, count: rows * cols, dtype: t.dtype, into: base + dataStart + t.offset + row * cols * t.dtype.byteSize)
    }

    /// Writes all of `t` (whole rows of tensor `name`) from row `row` on.
    public func write(_ name: String, row: Int = 0, _ t: Tensor) {
        guard let l = layout[name] else { preconditionFailure("\(url.lastPathComponent) has no tensor \(name)") }
        let cols = l.shape.count <= 1 ? 1 : l.shape.dropFirst().reduce(1, *)
        write(name, row: row, from: t.data, rows: t.count / cols)
    }

    /// Flushes the data and renames the file into place.
    public func commit() throws {
        guard msync(base, size, MS_SYNC) == 0, fsync(fd) == 0 else {
            throw CheckpointError(file: url.path, "cannot flush (\(String(cString: strerror(errno))))")
        }
        close(fd)
        fd = -1
        guard rename(tmp.path, url.path) == 0 else {
            unlink(tmp.path)
            throw CheckpointError(file: url.path, "cannot move the finished file into place")
        }
        committed = true
    }
}
