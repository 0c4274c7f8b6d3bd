import ArgumentParser
import Cumulocity
import JSONSupport
import Switchyard

/// What the console shows, from a terminal: the platform side of the sandbox (or of a tenant) as
/// its platform user sees it. Every command prints one line per item, or the JSON of one resource.
struct PlatformConnection: ParsableArguments {
    @Option(help: "The sandbox (or tenant) URL.") var url = "http://127.0.0.1:8111"
    @OptionGroup var tenant: TenantOptions

    func client() throws -> PlatformClient {
        PlatformClient(baseURL: url, transport: try CurlTransport(),
                       credentials: BasicCredentials(tenant: tenant.tenant, username: tenant.platformUser, password: tenant.platformPassword))
    }

    /// One page of a collection, `pageSize` items, as the platform answers it.
    func page(_ path: String, _ member: String, _ query: [(String, String)], pageSize: Int) async throws -> [JSONValue] {
        let answer = try await client().send("GET", path, query: query + [("pageSize", String(pageSize))], accept: MediaType.json).json
        return answer?[member]?.arrayValue ?? []
    }
}

/// A device's measurements or events, newest first: `--device`, `--type`, `--page-size`.
struct DeviceDocuments: ParsableArguments {
    @OptionGroup var connection: PlatformConnection
    @Option(help: "The source device's id.") var device: String
    @Option(help: "Only of this type.") var type: String?
    @Option(help: "How many at most.") var pageSize = 20

    func page(_ path: String, _ member: String) async throws -> [JSONValue] {
        try await connection.page(path, member, [("source", device)] + (type.map { [("type", $0)] } ?? []), pageSize: pageSize)
    }
}

/// `key=value` pairs of the fields present, for one-line listings.
func summary(_ item: JSONValue, _ keys: [String]) -> String {
    keys.compactMap { key -> String? in
        guard let value = item[key], value != .null else { return nil }
        return "\(key)=" + (value.stringValue ?? value.encodedString())
    }.joined(separator: "  ")
}

struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "device", abstract: "List devices and show one (the platform side).",
                                                    subcommands: [List.self, Show.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Devices (managed objects with c8y_IsDevice), oldest first, with their child devices.")
        @OptionGroup var connection: PlatformConnection
        @Option(help: "How many at most.") var pageSize = 100

        func run() async throws {
            let devices = try await connection.page("/inventory/managedObjects", "managedObjects", [("fragmentType", "c8y_IsDevice")], pageSize: pageSize)
            for device in devices {
                let children = device["childDevices"]?["references"]?.arrayValue?.compactMap { $0["managedObject"]?["id"]?.idValue } ?? []
                print(summary(device, ["id", "name", "type"]) + (children.isEmpty ? "" : "  children=" + children.joined(separator: ",")))
            }
            if devices.isEmpty { print("(no devices)") }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One device's managed object (JSON) and external ids.")
        @OptionGroup var connection: PlatformConnection
        @Argument(help: "The device's managed object id.") var id: String

        func run() async throws {
            let client = try connection.client()
            print(try await client.managedObject(id: id).encodedString())
            let ids = try await client.send("GET", "/identity/globalIds/\(percentEncoded(id))/externalIds", accept: MediaType.json).json
            for entry in ids?["externalIds"]?.arrayValue ?? [] { print("external id: " + summary(entry, ["type", "externalId"])) }
        }
    }
}

extension OperationCommand {
    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One operation (JSON).")
        @OptionGroup var connection: PlatformConnection
        @Argument(help: "The operation id.") var id: String

        func run() async throws { print(try await connection.client().operation(id: id).encodedString()) }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a PENDING operation (PENDING -> FAILED with a reason), as an operator.")
        @OptionGroup var connection: PlatformConnection
        @Argument(help: "The operation id.") var id: String
        @Option(help: "The failure reason shown for it.") var reason = "cancelled by the operator"

        func run() async throws {
            let answer = try await connection.client().send("PUT", "/devicecontrol/operations/\(percentEncoded(id))",
                                                            body: ["status": "FAILED", "failureReason": .string(reason)],
                                                            accept: MediaType.operation).json
            print(summary(answer ?? .null, ["id", "status", "failureReason"]))
        }
    }
}

struct MeasurementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "measurement", abstract: "Read measurements (the platform side).",
                                                    subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A device's measurements, newest first.")
        @OptionGroup var selection: DeviceDocuments

        func run() async throws {
            let items = try await selection.page("/measurement/measurements", "measurements")
            for item in items {
                // The series: every fragment other than the standard fields, as fragment.series=value unit.
                let standard: Set<String> = ["id", "self", "time", "type", "source"]
                var series: [String] = []
                for (fragment, value) in (item.objectValue ?? [:]).sorted(by: { $0.key < $1.key }) where !standard.contains(fragment) {
                    for (name, reading) in (value.objectValue ?? [:]).sorted(by: { $0.key < $1.key }) {
                        series.append("\(fragment).\(name)=\(reading["value"]?.encodedString() ?? "?")\(reading["unit"]?.stringValue.map { " " + $0 } ?? "")")
                    }
                }
                print(summary(item, ["id", "time", "type"]) + "  " + series.joined(separator: "  "))
            }
            if items.isEmpty { print("(no measurements)") }
        }
    }
}

struct EventCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "event", abstract: "Read events (the platform side).", subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A device's events, newest first.")
        @OptionGroup var selection: DeviceDocuments

        func run() async throws {
            let items = try await selection.page("/event/events", "events")
            for item in items {
                let file = item["c8y_IsBinary"].map { "  file=\($0["name"]?.stringValue ?? "?") (\($0["length"]?.encodedString() ?? "?") bytes)" } ?? ""
                print(summary(item, ["id", "time", "type", "text"]) + file)
            }
            if items.isEmpty { print("(no events)") }
        }
    }
}

struct AlarmCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "alarm", abstract: "Read and clear alarms (the platform side).",
                                                    subcommands: [List.self, Clear.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A device's alarms, newest first.")
        @OptionGroup var connection: PlatformConnection
        @Option(help: "The source device's id.") var device: String
        @Option(help: "ACTIVE, ACKNOWLEDGED or CLEARED.") var status: String?
        @Option(help: "How many at most.") var pageSize = 20

        func run() async throws {
            let query = [("source", device)] + (status.map { [("status", $0)] } ?? [])
            let items = try await connection.page("/alarm/alarms", "alarms", query, pageSize: pageSize)
            for item in items { print(summary(item, ["id", "time", "severity", "status", "type", "count", "text"])) }
            if items.isEmpty { print("(no alarms)") }
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Clear one alarm by id, or every active alarm of a device.")
        @OptionGroup var connection: PlatformConnection
        @Argument(help: "The alarm id (or use --device).") var id: String?
        @Option(help: "Clear every active alarm of this device.") var device: String?

        func validate() throws {
            guard (id == nil) != (device == nil) else { throw ValidationError("name an alarm id or --device, not both") }
        }

        func run() async throws {
            let client = try connection.client()
            if let id {
                try await client.updateAlarm(id: id, ["status": "CLEARED"])
                print("cleared alarm \(id)")
            } else if let device {
                _ = try await client.send("PUT", "/alarm/alarms", query: [("source", device), ("status", "ACTIVE")], body: ["status": "CLEARED"],
                                          accept: MediaType.alarm)
                print("cleared the active alarms of device \(device)")
            }
        }
    }
}

struct BinaryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "binary", abstract: "Upload files to the tenant's file repository.",
                                                    subcommands: [Upload.self])

    struct Upload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upload a file (POST /inventory/binaries, multipart) and print its id and download URL (for c8y_Firmware, c8y_SoftwareUpdate…).")
        @OptionGroup var connection: PlatformConnection
        @Argument(help: "The file.") var file: String
        @Option(help: "Its name in the repository (default: the file's name).") var name: String?
        @Option(help: "Its media type.") var type = "application/octet-stream"

        func run() async throws {
            guard let bytes = try FileSystem.read(file) else { throw ValidationError("\(file): no such file") }
            let boundary = "switchyard-\(UInt64.random(in: 1...UInt64.max))"
            let object = JSONValue.object(["name": .string(name ?? String(file.split(separator: "/").last ?? "file")), "type": .string(type)])
            var body = Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"object\"\r\n\r\n\(object.encodedString())\r\n".utf8)
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"file\"\r\nContent-Type: \(type)\r\n\r\n".utf8)
            body += bytes + Array("\r\n--\(boundary)--\r\n".utf8)
            let answer = try await connection.client().forward("POST", "/inventory/binaries",
                                                               headers: [("Content-Type", "multipart/form-data; boundary=\(boundary)"),
                                                                         ("Accept", MediaType.json)], body: body)
            guard answer.status == 201, let info = try? JSONValue.parse(answer.body), let id = info["id"]?.idValue else {
                throw ValidationError("the upload was answered \(answer.status): \(String(decoding: answer.body.prefix(300), as: UTF8.self))")
            }
            print("uploaded \(file) as binary \(id) (\(bytes.count) bytes): \(connection.url)/inventory/binaries/\(id)")
        }
    }
}
