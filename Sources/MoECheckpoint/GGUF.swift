import Foundation
import MoETensor
#if canImport(Glibc)
import Glibc
#endif

/// GGUF, llama.cpp's model file (version 3): a header, typed metadata, tensor records, then the tensors' data,
/// each aligned to `general.alignment` (32). Dimensions are listed innermost first (`ne[0]` is the contiguous
/// one), so a row-major [rows, cols] matrix is [cols, rows] in GGUF.
public enum GGUF {
    /// Metadata values (GGUF's value types).
    public enum Value: Equatable, Sendable {
        case u32(UInt32), i32(Int32), u64(UInt64), f32(Float), bool(Bool), string(String)
        case strings([String]), f32s([Float]), i32s([Int32])

        var typeID: UInt32 {
            switch self {
            case .u32: return 4
            case .i32: return 5
            case .f32: return 6
            case .bool: return 7
            case .string: return 8
            case .strings, .f32s, .i32s: return 9
            case .u64: return 10
            }
        }
    }

    /// Tensor element types written here (ggml's ids).
    public enum TensorType: UInt32, Sendable {
        case f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30

        /// Bytes of `count` elements (Q8_0: blocks of 32 values, an f16 scale and 32 int8).
        public func byteCount(_ count: Int) -> Int {
            switch self {
            case .f32: return count * 4
            case .f16, .bf16: return count * 2
            case .q8_0: return count / 32 * 34
            }
        }
        public var name: String {
            switch self {
            case .f32: return "f32"
            case .f16: return "f16"
            case .q8_0: return "q8_0"
            case .bf16: return "bf16"
            }
        }
    }

    /// One tensor: GGUF name, row-major shape [..., rows, cols] (written reversed), type, and a function that gives its
    /// f32 values a row at a time (`row(i, into:)` for i in 0..<rows, cols values each), so tensors stream to disk.
    public struct Tensor: Sendable {
        public var name: String
        public var shape: [Int]
        public var type: TensorType
        public var rows: Int { shape.dropLast().reduce(1, *) }
        public var cols: Int { shape.last ?? 1 }
        public let row: @Sendable (Int, UnsafeMutablePointer<Float>) -> Void

        public init(name: String, shape: [Int], type: TensorType, row: @escaping @Sendable (Int, UnsafeMutablePointer<Float>) -> Void) {
            self.name = name; self.shape = shape; self.type = type; self.row = row
        }
    }

    public static let alignment = 32

    /// Writes `path` atomically (a temporary file renamed when complete): metadata in the given order, then tensors.
    public static func write(path: URL, metadata: [(String, Value)], tensors: [Tensor], progress: ((Int) -> Void)? = nil) throws {
        for t in tensors where t.type == .q8_0 && t.cols % 32 != 0 {
            throw CheckpointError(file: path.path, tensor: t.name, "Q8_0 needs rows whose length is a multiple of 32 (got \(t.cols))")
        }
        var head = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        func str(_ s: String) { let b = Array(s.utf8); u64(UInt64(b.count)); head.append(contentsOf: b) }
        head.append(contentsOf: Array("GGUF".utf8))
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, value) in metadata {
            str(key)
            u32(value.typeID)
            switch value {
            case .u32(let v): u32(v)
            case .i32(let v): u32(UInt32(bitPattern: v))
            case .u64(let v): u64(v)
            case .f32(let v): u32(v.bitPattern)
            case .bool(let v): head.append(v ? 1 : 0)
            case .string(let s): str(s)
            case .strings(let a): u32(8); u64(UInt64(a.count)); for s in a { str(s) }
            case .f32s(let a): u32(6); u64(UInt64(a.count)); for v in a { u32(v.bitPattern) }
            case .i32s(let a): u32(5); u64(UInt64(a.count)); for v in a { u32(UInt32(bitPattern: v)) }
            }
        }
        var offset = 0
        for t in tensors {
            str(t.name)
            u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            offset += (t.type.byteCount(t.rows * t.cols) + alignment - 1) / alignment * alignment
        }
        while head.count % alignment != 0 { head.append(0) }
        let tmp = path.deletingLastPathComponent().appendingPathComponent(".\(path.lastPathComponent).tmp-\(getpid())")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CheckpointError(file: tmp.path, "cannot create (\(String(cString: strerror(errno))))") }
        let out = FileOutput(fd: fd, path: tmp.path)
        do {
            try head.withUnsafeBytes { try out.write($0) }
            for t in tensors {
                let rowBytes = t.type.byteCount(t.cols)
                let rowsPer = max(1, (8 << 20) / max(1, rowBytes))
                let values = UnsafeMutablePointer<Float>.allocate(capacity: t.cols)
                let buffer = UnsafeMutableRawPointer.allocate(byteCount: rowsPer * rowBytes + alignment, alignment: 64)
                defer { values.deallocate(); buffer.deallocate() }
                var r = 0
                while r < t.rows {
                    let n = min(rowsPer, t.rows - r)
                    for i in 0..<n {
                        t.row(r + i, values)
                        encode(values, count: t.cols, type: t.type, into: buffer + i * rowBytes)
                    }
                    try out.write(UnsafeRawBufferPointer(start: buffer, count: n * rowBytes))
                    progress?(n * rowBytes)
                    r += n
                }
                let pad = (alignment - t.type.byteCount(t.rows * t.cols) % alignment) % alignment
                if pad > 0 { try [UInt8](repeating: 0, count: pad).withUnsafeBytes { try out.write($0) } }
            }
            guard fsync(fd) == 0 else { throw CheckpointError(file: tmp.path, "cannot sync (\(String(cString: strerror(errno))))") }
            close(fd)
            guard rename(tmp.path, path.path) == 0 else { throw CheckpointError(file: path.path, "cannot rename into place (\(String(cString: strerror(errno))))") }
        } catch {
            close(fd)
            unlink(tmp.path)
            throw error
        }
    }

    /// `count` f32 values in `type`: bf16/f16 rounded to nearest even, Q8_0 as ggml quantises (per block of 32:
    /// d = max|x| / 127 stored as f16, q = round(x / d)).
    public static func encode(_ x: UnsafePointer<Float>, count: Int, type: TensorType, into dst: UnsafeMutableRawPointer) {
        switch type {
        case .f32: dst.copyMemory(from: x, byteCount: count * 4)
        case .f16: Convert.fromFloat(x, count: count, dtype: .f16, into: dst)
        case .bf16: Convert.fromFloat(x, count: count, dtype: .bf16, into: dst)
        case .q8_0:
            for b in 0..<(count / 32) {
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(x[b * 32 + j])) }
                let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
                let block = dst + b * 34
                block.storeBytes(of: Float16(d).bitPattern, as: UInt16.self)
                for j in 0..<32 { block.storeBytes(of: Int8((x[b * 32 + j] * id).rounded()), toByteOffset: 2 + j, as: Int8.self) }
            }
        }
    }

    /// A GGUF file read back: metadata and tensor records (name, row-major shape, type, absolute data offset).
    public struct File {
        public var metadata: [String: Value] = [:]
        public var keys: [String] = []
        public var tensors: [(name: String, shape: [Int], type: UInt32, offset: Int)] = []
        public var dataStart = 0
        public let bytes: Data

        public init(path: URL) throws {
            bytes = try Data(contentsOf: path, options: .alwaysMapped)
            var p = 0
            func need(_ n: Int) throws { guard p + n <= bytes.count else { throw CheckpointError(file: path.path, "truncated GGUF") } }
            func u32() throws -> UInt32 { try need(4); defer { p += 4 }; return bytes.subdata(in: p..<(p + 4)).withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
            func u64() throws -> UInt64 { try need(8); defer { p += 8 }; return bytes.subdata(in: p..<(p + 8)).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
            func str() throws -> String { let n = Int(try u64()); try need(n); defer { p += n }; return String(decoding: bytes.subdata(in: p..<(p + n)), as: UTF8.self) }
            try need(4)
            guard bytes.subdata(in: 0..<4) == Data("GGUF".utf8) else { throw CheckpointError(file: path.path, "not a GGUF file") }
            p = 4
            guard try u32() == 3 else { throw CheckpointError(file: path.path, "GGUF version is not 3") }
            let nt = Int(try u64()), nk = Int(try u64())
            func value(_ type: UInt32) throws -> Value {
                switch type {
                case 4: return .u32(try u32())
                case 5: return .i32(Int32(bitPattern: try u32()))
                case 6: return .f32(Float(bitPattern: try u32()))
                case 7: try need(1); p += 1; return .bool(bytes[bytes.startIndex + p - 1] != 0)
                case 8: return .string(try str())
                case 10: return .u64(try u64())
                case 9:
                    let et = try u32(), n = Int(try u64())
                    switch et {
                    case 8: return .strings(try (0..<n).map { _ in try str() })
                    case 6: return .f32s(try (0..<n).map { _ in Float(bitPattern: try u32()) })
                    case 5: return .i32s(try (0..<n).map { _ in Int32(bitPattern: try u32()) })
                    default: throw CheckpointError(file: path.path, "array of GGUF type \(et) not read here")
                    }
                default: throw CheckpointError(file: path.path, "GGUF value type \(type) not read here")
                }
            }
            for _ in 0..<nk {
                let k = try str()
                metadata[k] = try value(try u32())
                keys.append(k)
            }
            for _ in 0..<nt {
                let name = try str()
                let nd = Int(try u32())
                let ne = try (0..<nd).map { _ in Int(try u64()) }
                let type = try u32()
                let off = Int(try u64())
                tensors.append((name, Array(ne.reversed()), type, off))
            }
            dataStart = (p + alignment - 1) / alignment * alignment
            tensors = tensors.map { ($0.name, $0.shape, $0.type, dataStart + $0.offset) }
        }
    }
}
