import HandlerKit

/// `c8y_DeviceProfile` (`{firmware {name, version, url}, software [{name, version, url, action,
/// softwareType}], configuration [{name, type, url}]}`, with `profileName` and `profileId` on the
/// operation): applies the firmware, then the software, then each configuration file, each through
/// the handler this device declares for the single operation (`c8y_Firmware`, `c8y_SoftwareUpdate`,
/// `c8y_DownloadConfigFile`), so each step keeps that handler's guarantees and reports the inventory
/// as the single operation would (`c8y_Firmware`, `c8y_SoftwareList`, `c8y_Configuration_<type>`).
///
/// As the platform's device-management reference ("Device profile") asks, the device first sets
/// `c8y_Profile` (`{profileName, profileId, profileExecuted: false}`) and, once every step
/// succeeded, `profileExecuted: true`. A firmware step that reboots the device returns
/// ``Outcome/restartRequired``; after the restart ``resume(_:context:)`` resumes that step and goes
/// on. A failing step fails the profile, naming the step and the steps already applied.
///
/// Declare it `resumable: true` with `requires: [c8y_Firmware, c8y_SoftwareUpdate, c8y_DownloadConfigFile]`,
/// so it is advertised only when at least one of them is declared. No options.
public struct DeviceProfileHandler: OperationHandler {
    public init(options: JSONValue) throws(HandlerOptionsError) {
        if let keys = options.objectValue?.keys, !keys.isEmpty {
            throw HandlerOptionsError("c8y_DeviceProfile takes no options (found \(keys.sorted().joined(separator: ", ")))")
        }
    }

    struct Step {
        let name: String
        let fragment: String
        let payload: JSONValue
    }

    /// The profile's steps in the order the reference recommends: firmware, software, configuration.
    func steps(_ profile: JSONValue) -> Result<[Step], HandlerOptionsError> {
        var steps: [Step] = []
        if let firmware = profile["firmware"], firmware != .null {
            guard firmware.objectValue != nil else { return .failure(HandlerOptionsError("c8y_DeviceProfile.firmware must be an object")) }
            steps.append(Step(name: "firmware", fragment: "c8y_Firmware", payload: firmware))
        }
        if let software = profile["software"], software != .null {
            guard let list = software.arrayValue else { return .failure(HandlerOptionsError("c8y_DeviceProfile.software must be a list")) }
            if !list.isEmpty { steps.append(Step(name: "software", fragment: "c8y_SoftwareUpdate", payload: software)) }
        }
        if let configuration = profile["configuration"], configuration != .null {
            guard let list = configuration.arrayValue else {
                return .failure(HandlerOptionsError("c8y_DeviceProfile.configuration must be a list"))
            }
            for (index, item) in list.enumerated() {
                guard let type = item["type"]?.stringValue, !type.isEmpty, let url = item["url"]?.stringValue, !url.isEmpty else {
                    return .failure(HandlerOptionsError("c8y_DeviceProfile.configuration[\(index)] needs type and url"))
                }
                steps.append(Step(name: "configuration \(type)", fragment: "c8y_DownloadConfigFile",
                                  payload: ["type": .string(type), "url": .string(url)]))
            }
        }
        return .success(steps)
    }

    func profileFragment(_ operation: Operation, executed: Bool) -> [String: JSONValue] {
        ["c8y_Profile": [
            "profileName": operation.json["profileName"] ?? "", "profileId": operation.json["profileId"] ?? "",
            "profileExecuted": .bool(executed),
        ]]
    }

    public func execute(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        let steps: [Step]
        switch self.steps(operation.payload) {
        case .success(let found): steps = found
        case .failure(let problem): return .failed(problem.detail)
        }
        guard !steps.isEmpty else { return .failed("c8y_DeviceProfile has no firmware, software or configuration to apply") }
        try await context.updateInventory(profileFragment(operation, executed: false))
        return try await run(steps, from: 0, resuming: false, operation, context)
    }

    public func resume(_ operation: Operation, context: any HandlerContext) async throws -> Outcome {
        guard case .success(let steps) = self.steps(operation.payload),
              let saved = await context.loadState(forKey: "profile.step"), let index = Int(saved), steps.indices.contains(index) else {
            return .failed("the agent restarted before the profile's first step began; nothing was changed, try again")
        }
        return try await run(steps, from: index, resuming: true, operation, context)
    }

    func run(_ steps: [Step], from first: Int, resuming: Bool, _ operation: Operation, _ context: any HandlerContext) async throws -> Outcome {
        for index in first..<steps.count {
            let step = steps[index]
            // Before the step: a restart in the middle of it resumes this step, not an earlier one.
            try await context.saveState(String(index), forKey: "profile.step")
            let phase: Phase = index == first && resuming ? .resume : .execute
            await context.log("profile step \(index + 1) of \(steps.count): \(step.name)")
            switch await context.runStep(step.name, fragment: step.fragment, payload: step.payload, phase: phase) {
            case .successful:
                continue
            case .restartRequired:
                return .restartRequired
            case .failed(let reason, _):
                let applied = steps[..<index].map(\.name)
                return .failed("the profile's \(step.name) step failed: \(reason)"
                               + (applied.isEmpty ? "" : " (already applied: \(applied.joined(separator: ", ")))"))
            }
        }
        try await context.updateInventory(profileFragment(operation, executed: true))
        return .successful
    }
}
