-- Argo CD health for modelcache.dev ModelCache and ModelStore (argocd-cm:
-- resource.customizations.health.modelcache.dev_ModelCache and ..._ModelStore, the same script for both).
-- Plain Lua 5.1 (Argo CD runs gopher-lua). The operator writes status.phase, status.observedGeneration and
-- a Ready condition that summarises the object's children, so this needs nothing else.
local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
local readyMessage = ""
if ready ~= nil and ready.message ~= nil then
  readyMessage = ready.message
end

-- A status written for an older spec says nothing about the spec in Git.
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to observe generation %d", generation)
  return hs
end

-- A ModelCache fails (phase Failed); a ModelStore is refused by the operator (phase Invalid).
local phase = status.phase
if phase == "Failed" or phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = readyMessage
  if hs.message == "" and phase == "Failed" then
    hs.message = obj.kind .. " failed"
  elseif hs.message == "" then
    hs.message = obj.kind .. " is invalid"
  end
  return hs
end

if phase == "Ready" or (phase == nil and ready ~= nil and ready.status == "True") then
  hs.status = "Healthy"
  hs.message = readyMessage
  return hs
end

-- Pending, Provisioning, Downloading, Verifying, Deleting, no phase yet, or a phase newer than this script.
hs.status = "Progressing"
local parts = {}
if phase ~= nil then
  table.insert(parts, phase)
end
if status.progress ~= nil and status.progress.percent ~= nil and status.progress.percent ~= "" then
  table.insert(parts, status.progress.percent)
end
if readyMessage ~= "" then
  table.insert(parts, readyMessage)
end
hs.message = table.concat(parts, ": ")
return hs
