import Foundation
import MoEJSON
import MoETensor
#if canImport(Glibc)
import Glibc
#endif

/// Where one tensor lives in a safetensors file.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range inside the data section (after the 8-byte length and the JSON header).
    public let begin: Int
    public let end: Int
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { end - begin }
}

/// A read-only memory mapping of a file, unmapped when the last reference goes. Pages are read from disk
/// only when touched; `advise` tells the kernel which ranges are needed next and which are done, so a
/// model larger than RAM streams through the page cache instead of thrashing it.
///
/// The mapping is `PROT_READ`: a read-only private mapping is not charged against the commit limit, so a file
/// larger than RAM + swap opens. Training that updates f32 weights in place (they are zero-copy views of these
/// pages) first calls `makeWritable()`, which turns the mapping copy-on-write: written pages become this process's
/// own copies and the file never changes.
public final class MappedFile: WritableMapping, @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int
    private let fd: Int32
    private let lock = NSLock()
    private var writable = false

    public enum Advice: Sendable {
        /// Read ahead: the range is used soon.
        case willNeed
        /// The range is done for now: drop it from this mapping and from the page cache.
        case evict
    }

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CheckpointError(file: path, "cannot open (\(String(cString: strerror(errno))))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { close(fd); throw CheckpointError(file: path, "cannot stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { close(fd); throw CheckpointError(file: path, "not a regular file") }
        size = Int(st.st_size)
        self.fd = fd
        if size == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        // Private and read-only until `makeWritable()`: not charged against commit, whatever the file's size.
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            close(fd)
            throw CheckpointError(file: path, "mmap failed (\(String(cString: strerror(errno))))")
        }
        base = UnsafeRawPointer(p)
    }

    /// Makes the pages writable, copy-on-write (for training that updates f32 weights in place). The kernel then
    /// charges the whole mapping against the commit limit; a file too large for that is refused with its name.
    public func makeWritable() throws {
        lock.lock(); defer { lock.unlock() }
        guard !writable, size > 0 else { return }
        guard mprotect(UnsafeMutableRawPointer(mutating: base), size, PROT_READ | PROT_WRITE) == 0 else {
            throw CheckpointError(file: path, "cannot make its \(size)-byte mapping writable for training in place (\(String(cString: strerror(errno))))")
        }
        writable = true
    }

    private var isWritable: Bool { lock.lock(); defer { lock.unlock() }; return writable }

    deinit {
        if size == 0 { UnsafeMutableRawPointer(mutating: base).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
        close(fd)
    }

    /// Hints the kernel about bytes [offset, offset + count) of the file (whole pages around them).
    public func advise(_ advice: Advice, offset: Int, count: Int) {
        guard size > 0, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = max(0, offset) / page * page
        let hi = min(size, offset + count)
        guard hi > lo else { return }
        let p = UnsafeMutableRawPointer(mutating: base + lo)
        switch advice {
        case .willNeed:
            _ = madvise(p, hi - lo, MADV_WILLNEED)
        case .evict:
            // Pages written through a writable private mapping (trained f32 weights) are this process's own copies:
            // dropping them would lose the update, so a mapping made writable is never evicted.
            guard !isWritable else { return }
            _ = madvise(p, hi - lo, MADV_DONTNEED)
            _ = posix_fadvise(fd, off_t(lo), off_t(hi - lo), POSIX_FADV_DONTNEED)
        }
    }
}

/// One safetensors file, mmapped. The header is untrusted: it is validated completely at open
/// (JSON shape, dtypes, sizes, ranges inside the file, no overlaps, no overflow) so that reading a
/// tensor afterwards cannot fault.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let mapping: MappedFile
    /// Tensors in file order (by offset).
    public let tensors: [TensorInfo]
    public let metadata: [String: String]
    private let index: [String: Int]
    /// Byte offset of the data section in the file.
    public let dataOffset: Int

    /// Largest header accepted (the format's own reference implementation uses 100 MB).
    public static let maxHeaderBytes = 100_000_000

    public init(path: String) throws {
        self.path = path
        mapping = try MappedFile(path: path)
        let size = mapping.size
        let fail = { (tensor: String?, problem: String) in CheckpointError(file: path, tensor: tensor, problem) }
        guard size >= 8 else { throw fail(nil, "truncated: \(size) bytes, shorter than the 8-byte header length") }
        let n64 = UInt64(littleEndian: mapping.base.loadUnaligned(as: UInt64.self))
        guard n64 <= UInt64(Self.maxHeaderBytes) else { throw fail(nil, "header length \(n64) exceeds the \(Self.maxHeaderBytes)-byte limit") }
        let n = Int(n64)
        guard 8 + n <= size else { throw fail(nil, "header length \(n) runs past the end of the file (\(size) bytes)") }
        dataOffset = 8 + n
        let dataSize = size - dataOffset
        let headerData = Data(bytes: mapping.base + 8, count: n)
        let root: [String: JSONValue]
        do {
            guard case .object(let o) = JSONValue(try JSON.parse(Array(headerData))) else { throw fail(nil, "header is not a JSON object") }
            root = o
        } catch let e as JSON.ParseError {
            throw fail(nil, "header is not valid JSON (\(e))")
        }
        var infos: [TensorInfo] = []
        var meta: [String: String] = [:]
        for (name, value) in root {
            if name == "__metadata__" {
                guard let m = value.object else { throw fail(nil, "__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v.string else { throw fail(nil, "__metadata__ value for \"\(k)\" is not a string") }
                    meta[k] = s
                }
                continue
            }
            guard let entry = value.object else { throw fail(name, "entry is not an object") }
            guard let dtypeName = entry["dtype"]?.string else { throw fail(name, "missing dtype") }
            guard let dtype = DType(rawValue: dtypeName) else { throw fail(name, "unknown dtype \"\(dtypeName)\"") }
            guard let shapeValues = entry["shape"]?.array else { throw fail(name, "missing or malformed shape") }
            var shape: [Int] = []
            for d in shapeValues {
                guard let v = d.int, v >= 0 else { throw fail(name, "shape \(shapeValues.map { $0.double.map { "\($0)" } ?? "?" }) has an invalid dimension") }
                shape.append(v)
            }
            guard let offs = entry["data_offsets"]?.array, offs.count == 2,
                  let begin = offs[0].int, let end = offs[1].int, begin >= 0, end >= 0
            else { throw fail(name, "missing or malformed data_offsets") }
            guard begin <= end else { throw fail(name, "data_offsets [\(begin), \(end)] are reversed") }
            guard end <= dataSize else {
                throw fail(name, "data_offsets [\(begin), \(end)] lie outside the file's \(dataSize)-byte data section")
            }
            var elems = 1
            for d in shape {
                let (p, overflow) = elems.multipliedReportingOverflow(by: d)
                guard !overflow else { throw fail(name, "shape \(shape) overflows") }
                elems = p
            }
            let (bytes, overflow) = elems.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow else { throw fail(name, "shape \(shape) overflows") }
            guard bytes == end - begin else {
                throw fail(name, "shape \(shape) × \(dtypeName) is \(bytes) bytes but data_offsets span \(end - begin)")
            }
            infos.append(TensorInfo(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }
        infos.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        // Like the format's reference implementation: the tensors tile the data section exactly, one after the
        // other with no gap and nothing after the last. A header length a few bytes off (which JSON padding can
        // hide) shifts every tensor, and is caught here instead of computing on misaligned weights.
        var lastEnd = 0
        var lastName = ""
        for info in infos {
            guard info.begin >= lastEnd else {
                throw fail(info.name, "byte range [\(info.begin), \(info.end)] overlaps tensor \"\(lastName)\"")
            }
            guard info.begin == lastEnd else {
                throw fail(info.name, "bytes [\(lastEnd), \(info.begin)) of the data section belong to no tensor (the file is not fully covered; is the header length right?)")
            }
            lastEnd = info.end
            lastName = info.name
        }
        guard lastEnd == dataSize else {
            throw fail(nil, "the last \(dataSize - lastEnd) bytes of the data section belong to no tensor (the file is not fully covered; is the header length right?)")
        }
        tensors = infos
        metadata = meta
        var idx: [String: Int] = [:]
        for (i, t) in infos.enumerated() { idx[t.name] = i }
        index = idx
    }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// Pointer to the tensor's bytes inside the mapping (valid while this file lives).
    public func bytes(_ info: TensorInfo) -> UnsafeRawPointer { mapping.base + dataOffset + info.begin }

    /// A floating-point tensor of rank ≥ 2 as a matrix [product of the leading dimensions, last dimension] (a
    /// fused [E, rows, cols] expert tensor is [E·rows, cols]), in its stored dtype: a zero-copy view for F32,
    /// F16 and BF16 (F32 as an f32 `Tensor` view when aligned, so training can update it in place), a converted
    /// f32 copy for F64 or misaligned F32.
    public func weight(_ name: String) throws -> WeightMatrix {
        guard let info = info(name) else { throw CheckpointError(file: path, tensor: name, "not in this file") }
        guard info.shape.count >= 2 else { throw CheckpointError(file: path, tensor: name, "shape \(info.shape) is not a matrix") }
        let cols = info.shape.last!, rows = info.shape.dropLast().reduce(1, *)
        let p = bytes(info)
        switch info.dtype {
        case .bf16, .f16:
            return WeightMatrix(viewing: p, dtype: info.dtype, rows: rows, cols: cols, owner: mapping)
        case .f32, .f64:
            let t = try tensor(name)
            return WeightMatrix(info.shape.count == 2 ? t : t.reshaped([rows, cols]))
        default:
            throw CheckpointError(file: path, tensor: name, "dtype \(info.dtype.rawValue) cannot be read as floating point")
        }
    }

    /// The tensor as f32: a zero-copy view for aligned F32 data, a converted copy for F16/BF16.
    public func tensor(_ name: String) throws -> Tensor {
        guard let info = info(name) else { throw CheckpointError(file: path, tensor: name, "not in this file") }
        guard info.dtype.isFloatingPoint else {
            throw CheckpointError(file: path, tensor: name, "dtype \(info.dtype.rawValue) cannot be read as floating point")
        }
        let p = bytes(info)
        if info.dtype == .f32, Int(bitPattern: p) % 4 == 0 {
            return Tensor(viewing: UnsafeMutablePointer(mutating: p.assumingMemoryBound(to: Float.self)), shape: info.shape, owner: mapping)
        }
        return Tensor(converting: p, dtype: info.dtype, shape: info.shape)
    }
}
