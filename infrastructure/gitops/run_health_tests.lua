-- Runs an Argo CD health check against its health_test.yaml, the way Argo CD runs it.
--
--   lua5.1 run_health_tests.lua DIR [TESTDATA_FILE...]
--
-- DIR holds health.lua, health_test.yaml and testdata/. Each case's inputPath is read with
-- lyaml (Debian's lua-yaml), YAML null becomes nil (Argo CD decodes JSON null to nil), and
-- health.lua runs as Argo CD runs a custom check from argocd-cm: `obj` is the object, the base
-- and table libraries and a safe part of os are there, string and math are not (strings
-- have no methods either). The returned table must have a valid health status; status and
-- message are both compared. TESTDATA_FILE arguments are the files testdata/ holds: one that
-- no case uses is a failure too. Prints one line per case, then "N passed, M failed", and
-- exits 1 when anything failed.

local lyaml = require("lyaml")

local dir = arg[1]
if dir == nil then
  io.stderr:write("usage: lua5.1 run_health_tests.lua DIR [TESTDATA_FILE...]\n")
  os.exit(2)
end

local VALID = {
  Healthy = true, Progressing = true, Degraded = true,
  Suspended = true, Missing = true, Unknown = true,
}

local function readFile(path)
  local f, err = io.open(path, "rb")
  if f == nil then
    error(err, 0)
  end
  local content = f:read("*a")
  f:close()
  return content
end

-- lyaml's null sentinel becomes nil, recursively (a key with a null value disappears).
local function denull(value)
  if value == lyaml.null then
    return nil
  end
  if type(value) == "table" then
    local out = {}
    for k, v in pairs(value) do
      out[k] = denull(v)
    end
    return out
  end
  return value
end

-- Exactly one YAML document, as a table.
local function loadOne(path)
  local docs = lyaml.load(readFile(path), { all = true })
  if #docs ~= 1 then
    error(path .. ": expected one YAML document, found " .. #docs, 0)
  end
  local doc = denull(docs[1])
  if type(doc) ~= "table" then
    error(path .. ": not a YAML mapping", 0)
  end
  return doc
end

-- The globals Argo CD gives a custom health check (UseOpenLibs false): base, table, a safe os.
local function argocdEnv(object)
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, print = print, rawequal = rawequal, rawget = rawget, rawset = rawset,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    unpack = unpack, xpcall = xpcall, getmetatable = getmetatable,
    setmetatable = setmetatable, _VERSION = _VERSION,
    table = {
      concat = table.concat, insert = table.insert, maxn = table.maxn,
      remove = table.remove, sort = table.sort, getn = table.getn,
    },
    os = { clock = os.clock, date = os.date, difftime = os.difftime, time = os.time },
  }
  env._G = env
  env.obj = object
  return env
end

-- Runs the script with strings stripped of their methods, as under Argo CD.
local function runHealth(chunkSource, object)
  local chunk, err = loadstring(chunkSource, "=health.lua")
  if chunk == nil then
    return nil, err
  end
  setfenv(chunk, argocdEnv(object))
  local stringMeta = debug.getmetatable("")
  local stringIndex = stringMeta.__index
  stringMeta.__index = nil
  local ok, result = pcall(chunk)
  stringMeta.__index = stringIndex
  if not ok then
    return nil, tostring(result)
  end
  if type(result) ~= "table" then
    return nil, "expect table output from Lua script, not " .. type(result)
  end
  if result.message ~= nil and type(result.message) ~= "string" then
    return nil, "hs.message is a " .. type(result.message) .. ", not a string"
  end
  if not VALID[result.status] then
    -- What Argo CD reports for a status it does not know.
    return { status = "Unknown", message = "Lua returned an invalid health status" }
  end
  return { status = result.status, message = result.message or "" }
end

local function quote(s)
  return '"' .. tostring(s) .. '"'
end

local passed, failed = 0, 0
local function pass(line)
  passed = passed + 1
  print("ok    " .. line)
end
local function fail(line)
  failed = failed + 1
  print("FAIL  " .. line)
end

local ok, err = pcall(function()
  local source = readFile(dir .. "/health.lua")
  local suite = loadOne(dir .. "/health_test.yaml")
  if type(suite.tests) ~= "table" or #suite.tests == 0 then
    error(dir .. "/health_test.yaml: no tests", 0)
  end
  local used = {}
  for i, case in ipairs(suite.tests) do
    local input = case.inputPath
    local want = case.healthStatus or {}
    local name = tostring(input or ("test " .. i))
    if input == nil or want.status == nil then
      fail(name .. ": a test needs inputPath and healthStatus.status")
    else
      used[input] = true
      local loaded, object = pcall(loadOne, dir .. "/" .. input)
      if not loaded then
        fail(name .. ": " .. tostring(object))
      else
        local got, runError = runHealth(source, object)
        local wantMessage = want.message or ""
        if got == nil then
          fail(name .. ": health.lua failed: " .. runError)
        elseif got.status == want.status and got.message == wantMessage then
          pass(name .. ": " .. got.status .. " " .. quote(got.message))
        else
          fail(name .. ": want " .. want.status .. " " .. quote(wantMessage)
            .. ", got " .. got.status .. " " .. quote(got.message))
        end
      end
    end
  end
  for i = 2, #arg do
    if not used[arg[i]] then
      fail(arg[i] .. ": no case in health_test.yaml uses it")
    end
  end
end)
if not ok then
  fail(tostring(err))
end

print(passed .. " passed, " .. failed .. " failed")
if failed > 0 or passed == 0 then
  os.exit(1)
end
