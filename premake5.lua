-- premake5.lua: Hydra's one build description.  Written for premake5; the
-- shim below also lets Debian's premake4 4.3 run it:
--   premake4 --file=premake5.lua gmake && make -C build config=release
-- Windows (MinGW-w64 cross build, run under Wine):
--   premake4 --file=premake5.lua --os=windows gmake
--   make -C build/win config=debug CC=x86_64-w64-mingw32-gcc
if not workspace then                     -- premake4 4.3 has no workspace/filter
  workspace = solution
  function filter(terms)                  -- "configurations:debug" -> "debug"
    if terms == nil or terms == "*" then terms = {} end
    if type(terms) ~= "table" then terms = { terms } end
    local plain = {}
    for _, t in ipairs(terms) do
      table.insert(plain, (string.gsub(t, "^%a+:", "")))
    end
    configuration(plain)
  end
  function symbols(v)  if v == "On" then flags { "Symbols" } end end
  function optimize(v) if v ~= "Off" then flags { "OptimizeSpeed" } end end
  function warnings(v)                    -- premake4's ExtraWarnings is only -Wall
    if v == "Extra" then flags { "ExtraWarnings" }; buildoptions { "-Wextra" } end
  end
  function cdialect(v) buildoptions { "-std=" .. string.lower(v) } end
end

newoption { trigger = "werror", description = "Treat warnings as errors" }

local target_os = (os.target and os.target()) or os.get()
local windows = (target_os == "windows")
local top = windows and "build/win" or "build"

workspace "hydra"
  configurations { "debug", "release", "asan", "tsan" }
  location(top)
  language "C"
  cdialect "C11"
  warnings "Extra"
  includedirs { "include", "." }
  buildoptions { "-Wshadow", "-Wundef", "-Wstrict-prototypes",
                 "-Wmissing-prototypes" }
  if not windows then
    buildoptions { "-fPIC", "-pthread" }
    linkoptions { "-pthread" }
  end
  filter "options:werror"
    buildoptions { "-Werror" }
  filter "configurations:debug"
    symbols "On"
    defines { "HY_DEBUG=2" }
    targetdir(top .. "/debug")
    objdir(top .. "/obj/debug")
  filter "configurations:release"
    symbols "On"                          -- for profiles; costs no speed
    optimize "Speed"
    defines { "NDEBUG" }
    targetdir(top .. "/release")
    objdir(top .. "/obj/release")
  filter "configurations:asan"
    symbols "On"
    buildoptions { "-O1", "-fsanitize=address,undefined",
                   "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined" }
    linkoptions { "-fsanitize=address,undefined" }
    defines { "HY_DEBUG=2", "HY_ASAN=1" }
    targetdir(top .. "/asan")
    objdir(top .. "/obj/asan")
  filter "configurations:tsan"
    symbols "On"
    buildoptions { "-O1", "-fsanitize=thread", "-fno-omit-frame-pointer" }
    linkoptions { "-fsanitize=thread" }
    defines { "HY_DEBUG=1", "HY_TSAN=1" }
    targetdir(top .. "/tsan")
    objdir(top .. "/obj/tsan")
  filter {}

-- What every program links, after the library itself.
local function system_links()
  if windows then
    links { "ws2_32", "mswsock", "synchronization" }
  else
    links { "mimalloc", "uring", "pthread", "m" }
  end
end

local function library_files()
  files { "include/**.h", "alloc/*.c", "alloc/*.h", "runtime/*.c",
          "runtime/*.h", "channels/*.c", "channels/*.h", "net/*.c", "net/*.h" }
  if windows then
    files { "runtime/win/*.c", "runtime/win/*.S" }
  else
    files { "runtime/linux/*.c", "runtime/linux/*.S" }
  end
end

project "hydra"
  kind "StaticLib"
  library_files()
  -- `ar -rcs` only adds members: an object whose source was removed would
  -- stay in the archive and shadow its replacement.  Rebuild it whole.
  postbuildcommands { "@rm -f $(TARGET) && $(AR) -rcs $(TARGET) $(OBJECTS)" }

-- The shared build sits in its own folder so that programs here link the
-- static library with a plain -lhydra.
project "hydra_shared"
  kind "SharedLib"
  targetname "hydra"
  library_files()
  system_links()
  for _, cfg in ipairs({ "debug", "release", "asan", "tsan" }) do
    filter("configurations:" .. cfg)
      targetdir(top .. "/" .. cfg .. "/shared")
      objdir(top .. "/obj/shared-" .. cfg)
  end
  filter {}

project "hydra-tests"
  kind "ConsoleApp"
  files { "tests/*.c", "tests/*.h" }
  if windows then
    excludes { "tests/proc_posix.c" }
  else
    excludes { "tests/proc_win.c", "tests/test-win.c" } -- Windows only
  end
  links { "hydra" }
  system_links()

-- One program per folder under examples/ and per file under bench/.
for _, dir in ipairs(os.matchdirs("examples/*")) do
  project(path.getname(dir))
    kind "ConsoleApp"
    files { dir .. "/*.c", dir .. "/*.h" }
    links { "hydra" }
    system_links()
end

for _, f in ipairs(os.matchfiles("bench/*.c")) do
  project(path.getbasename(f))
    kind "ConsoleApp"
    files { f, "bench/*.h" }
    links { "hydra" }
    system_links()
end

-- `premake4 --file=premake5.lua [--prefix=/usr/local] install` (premake4
-- wants options before the action) copies the headers and the release
-- libraries (build them first) into the prefix and writes
-- lib/pkgconfig/hydra.pc, so another project builds with
--   cc app.c $(pkg-config --cflags --libs hydra)
newoption { trigger = "prefix", value = "DIR",
            description = "Install prefix (default /usr/local)" }
newaction {
  trigger = "install",
  description = "Install headers, libhydra and hydra.pc (build release first)",
  execute = function()
    local prefix = _OPTIONS["prefix"] or "/usr/local"
    local lib = "build/release/libhydra.a"
    if not os.isfile(lib) then
      error("build the release configuration first: make -C build config=release")
    end
    for _, d in ipairs({ "/include/hydra", "/lib/pkgconfig" }) do
      os.mkdir(prefix .. d)
    end
    local function copy(from, to)
      if not os.copyfile(from, to) then error("cannot copy " .. from .. " to " .. to) end
    end
    copy("include/hydra.h", prefix .. "/include/hydra.h")
    for _, h in ipairs(os.matchfiles("include/hydra/*.h")) do
      copy(h, prefix .. "/include/hydra/" .. path.getname(h))
    end
    copy(lib, prefix .. "/lib/libhydra.a")
    if os.isfile("build/release/shared/libhydra.so") then
      copy("build/release/shared/libhydra.so", prefix .. "/lib/libhydra.so")
    end
    local pc = io.open(prefix .. "/lib/pkgconfig/hydra.pc", "w")
    pc:write("prefix=" .. prefix .. "\n",
             "includedir=${prefix}/include\n",
             "libdir=${prefix}/lib\n\n",
             "Name: hydra\n",
             "Description: Embeddable actor/task runtime: stackful tasks on a completion-port thread pool\n",
             "Version: 0.1.0\n",
             "Cflags: -I${includedir} -pthread\n",
             "Libs: -L${libdir} -lhydra\n",
             "Libs.private: -lmimalloc -luring -pthread -lm\n")
    pc:close()
    print("installed into " .. prefix)
  end
}
