-- Argo CD health check for crucible.dev/Evaluation.
--
-- Install it as the argocd-cm key `resource.customizations.health.crucible.dev_Evaluation`
-- (see ../README.md). Test cases: health_test.yaml and testdata/, run by ../test.sh.
--
-- The kstatus conditions the controller writes decide, in this order:
--   no status yet, or status.observedGeneration < metadata.generation  -> Progressing
--   Stalled=True and the run was cancelled (spec.cancel)               -> Suspended
--   Stalled=True (NotPassed, InvalidSpec, SandboxUnavailable,
--     InvalidResult, OOMKilled, DeadlineExceeded, ...)                -> Degraded
--   Ready=True (finished and passed)                                   -> Healthy
--   Reconciling=True (Queued, Pending, Running)                        -> Progressing
-- Without those conditions, status.phase decides the same way.
--
-- Only functions of Lua's base library are used: Argo CD runs a custom health check without
-- the string and math libraries unless `resource.customizations.useOpenLibs.<group>_<kind>` is
-- set, so string.format, ("..."):sub and math.floor would fail there.

local hs = {}

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

-- "Reason: message", or whichever of the two is set.
local function explain(reason, message)
  reason = text(reason)
  message = text(message)
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if reason ~= "" then
    return reason
  end
  return message
end

local function findCondition(status, conditionType)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function isTrue(condition)
  return condition ~= nil and condition.status == "True"
end

-- What a run that has not finished is doing.
local function progress(status, phase)
  if phase == "Queued" then
    local message = "Queued"
    local queue = status.queue
    if type(queue) == "table" then
      if queue.position ~= nil then
        message = message .. " at position " .. text(queue.position)
      end
      if text(queue.reason) ~= "" then
        message = message .. ": " .. text(queue.reason)
      end
    end
    return message
  end
  if phase == "Pending" or phase == "Running" then
    local message = phase
    if text(status.podName) ~= "" then
      if phase == "Pending" then
        message = message .. ": waiting for pod " .. text(status.podName) .. " to start"
      else
        message = message .. ": pod " .. text(status.podName) .. " is running"
      end
      if status.attempts ~= nil then
        message = message .. " (attempt " .. text(status.attempts) .. ")"
      end
    end
    return message
  end
  if text(phase) == "" then
    return "waiting for the controller to set a phase"
  end
  return text(phase)
end

-- The message of a run that passed: the controller's status.message ("score 0.89 passed
-- (threshold 0.85)"), else the score, else the Ready condition's message.
local function passed(status, ready)
  local message = text(status.message)
  if message == "" and type(status.result) == "table" and status.result.score ~= nil then
    message = "score " .. text(status.result.score) .. " passed"
  end
  if message == "" and ready ~= nil then
    message = text(ready.message)
  end
  return message
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

-- The controller has not seen this object, or not its latest spec: whatever status there is
-- describes an older generation.
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "waiting for the controller to observe generation " .. text(generation)
  else
    hs.message = "waiting for the controller to observe this Evaluation"
  end
  return hs
end

local phase = status.phase
local stalled = findCondition(status, "Stalled")
local ready = findCondition(status, "Ready")
local reconciling = findCondition(status, "Reconciling")

-- Conditions first (kstatus, the same ones Flux reads).
if isTrue(stalled) then
  if phase == "Cancelled" or stalled.reason == "Cancelled" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
  hs.message = explain(stalled.reason, stalled.message)
  return hs
end
if isTrue(ready) then
  hs.status = "Healthy"
  hs.message = passed(status, ready)
  return hs
end
if isTrue(reconciling) then
  if phase == nil then
    phase = reconciling.reason
  end
  hs.status = "Progressing"
  hs.message = progress(status, phase)
  return hs
end

-- No kstatus condition is True (or there are none): fall back to the phase.
if phase == nil or phase == "Queued" or phase == "Pending" or phase == "Running" then
  hs.status = "Progressing"
  hs.message = progress(status, phase)
  return hs
end
if phase == "Succeeded" then
  if type(status.result) == "table" and status.result.passed == true then
    hs.status = "Healthy"
    hs.message = passed(status, nil)
  else
    hs.status = "Degraded"
    hs.message = explain("NotPassed", status.message)
  end
  return hs
end
if phase == "Failed" or phase == "TimedOut" then
  hs.status = "Degraded"
  if text(status.reason) ~= "" then
    hs.message = explain(status.reason, status.message)
  else
    hs.message = explain(phase, status.message)
  end
  return hs
end
if phase == "Cancelled" then
  hs.status = "Suspended"
  if text(status.reason) ~= "" then
    hs.message = explain(status.reason, status.message)
  else
    hs.message = explain(phase, status.message)
  end
  return hs
end

hs.status = "Unknown"
hs.message = "unknown phase " .. text(phase)
return hs
