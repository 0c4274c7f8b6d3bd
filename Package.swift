// swift-tools-version: 6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "switchyard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
        .executable(name: "switchyard-sandbox", targets: ["switchyard-sandbox"]),
        // Workbench: the agent measured against this machine's limits (docs/performance.md).
        .executable(name: "switchyard-bench", targets: ["switchyard-bench"]),
        .library(name: "HandlerKit", targets: ["HandlerKit"]),
        // For handler authors' unit tests: a recording HandlerContext (no agent, no sandbox).
        .library(name: "HandlerKitTesting", targets: ["HandlerKitTesting"]),
        // Turns a compiled handler into an executable plugin, built in a device maker's own package.
        .library(name: "HandlerKitRunner", targets: ["HandlerKitRunner"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // The Foundation trait is off: the device binary links FoundationEssentials only.
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2", traits: []),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
        // Workbench only (sandbox tenant, demo): never linked into `switchyard`.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
        // The sandbox's multipart uploads (POST /inventory/binaries, event binaries), as the platform takes them.
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
    ],
    targets: [
        // System libraries, wrapped by tiny module maps (see each folder's shim header).
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CYAML", path: "Sources/CYAML", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CMicroHTTPD", path: "Sources/CMicroHTTPD", pkgConfig: "libmicrohttpd",
                       providers: [.apt(["libmicrohttpd-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),

        // Linux calls Swift's Glibc does not export (sync_file_range, gettid), compiled with _GNU_SOURCE.
        .target(name: "CLinux", path: "Sources/CLinux"),
        .target(name: "JSONSupport", swiftSettings: strict),
        .target(name: "HandlerKit", dependencies: ["JSONSupport"], swiftSettings: strict),
        .target(name: "HandlerKitTesting", dependencies: ["HandlerKit"], swiftSettings: strict),
        .target(name: "HandlerKitRunner", dependencies: [
            "HandlerKit", "Cumulocity",
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: strict),
        .target(name: "Cumulocity", dependencies: [
            "CCurl", "CLinux", "COpenSSL", "JSONSupport",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "Switchyard", dependencies: [
            "HandlerKit", "Cumulocity", "CLinux", "CYAML", "COpenSSL", "CMicroHTTPD", "JSONSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),

        // Swift handler modules shipped with the agent; each imports HandlerKit only.
        .target(name: "MessageHandler", dependencies: ["HandlerKit"], path: "Plugins/Message",
                swiftSettings: strict),
        .target(name: "RestartHandler", dependencies: ["HandlerKit"], path: "Plugins/Restart",
                swiftSettings: strict),
        .target(name: "ConfigurationHandler", dependencies: ["HandlerKit"], path: "Plugins/Configuration",
                swiftSettings: strict),
        .target(name: "SoftwareHandler", dependencies: ["HandlerKit"], path: "Plugins/Software",
                swiftSettings: strict),
        .target(name: "FirmwareHandler", dependencies: ["HandlerKit"], path: "Plugins/Firmware",
                swiftSettings: strict),
        .target(name: "LogfileHandler", dependencies: ["HandlerKit"], path: "Plugins/Logs",
                swiftSettings: strict),
        .target(name: "DeviceProfileHandler", dependencies: ["HandlerKit"], path: "Plugins/DeviceProfile",
                swiftSettings: strict),
        // The catalog of compiled handlers, by the name a `swift:` declaration uses.
        .target(name: "BuiltinHandlers", dependencies: ["HandlerKit", "MessageHandler", "RestartHandler", "ConfigurationHandler",
                                                     "SoftwareHandler", "FirmwareHandler", "LogfileHandler",
                                                     "DeviceProfileHandler"],
                swiftSettings: strict),

        .executableTarget(name: "switchyard", dependencies: [
            "Switchyard", "BuiltinHandlers", "HandlerKit",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),

        .target(name: "Sandbox", dependencies: [
            "JSONSupport", "Cumulocity",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "MultipartKit", package: "multipart-kit"),
        ], swiftSettings: strict),
        .executableTarget(name: "switchyard-sandbox", dependencies: [
            "Sandbox", "Switchyard", "BuiltinHandlers", "Cumulocity",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),

        .executableTarget(name: "switchyard-bench", dependencies: [
            "Cumulocity", "JSONSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),

        // A compiled handler run out of process (HandlerKitRunner), for the tests.
        .executableTarget(name: "switchyard-runner-fixture", dependencies: ["HandlerKit", "HandlerKitRunner", "MessageHandler"],
                          path: "Tests/RunnerFixture", swiftSettings: strict),

        .testTarget(name: "SwitchyardTests", dependencies: [
            "Switchyard", "Sandbox", "Cumulocity", "HandlerKit", "BuiltinHandlers", "JSONSupport", "SoftwareHandler",
            "HandlerKitTesting", "MessageHandler", "ConfigurationHandler", "FirmwareHandler", "LogfileHandler", "DeviceProfileHandler",
        ], swiftSettings: strict),
    ]
)
