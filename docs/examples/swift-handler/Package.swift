// swift-tools-version: 6.2
// A device maker's own package: a compiled handler written against HandlerKit, built and deployed
// without rebuilding the agent. In your package, depend on Switchyard by URL and version instead of
// the path used here (this example lives inside the Switchyard repository and CI builds it from there):
//     .package(url: "https://github.com/switchyard-agent/switchyard", from: "0.1.0")
import PackageDescription

let package = Package(
    name: "acme-blink",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "switchyard", path: "../../.."),
    ],
    targets: [
        // The handler: imports HandlerKit only, so it can also be linked into an agent build.
        .target(name: "Blink", dependencies: [.product(name: "HandlerKit", package: "switchyard")],
                swiftSettings: [.swiftLanguageMode(.v6)]),
        // The executable the agent runs: `swift: {executable: /usr/lib/acme/acme-blink}`.
        .executableTarget(name: "acme-blink", dependencies: [
            "Blink", .product(name: "HandlerKitRunner", package: "switchyard"),
        ], swiftSettings: [.swiftLanguageMode(.v6)]),
        .testTarget(name: "BlinkTests", dependencies: [
            "Blink", .product(name: "HandlerKitTesting", package: "switchyard"),
        ], swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
