# Third-party dependencies of the library, included by the top-level CMakeLists.txt once
# moe_objects exists.
#
# cJSON parses the JSON of checkpoints (safetensors headers, config.json, the shard index) in
# csrc/io. It is a PRIVATE dependency of the object library; an OBJECT library does not carry
# its link dependencies into targets that only consume $<TARGET_OBJECTS:...>, so moe and
# moe_static name it too (they are created after this file runs, hence cmake_language(DEFER)).
option(MOE_WITH_CJSON "Build the checkpoint loader (safetensors, config.json; needs libcjson)" ON)

if(MOE_WITH_CJSON)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(CJSON REQUIRED IMPORTED_TARGET libcjson)
  target_link_libraries(moe_objects PRIVATE $<BUILD_INTERFACE:PkgConfig::CJSON>)
  target_compile_definitions(moe_objects PRIVATE MOE_WITH_CJSON=1)
  function(_moe_link_cjson)
    foreach(_t moe moe_static)
      if(TARGET ${_t})
        # Installed consumers of the static library link -lcjson themselves (the imported
        # target exists only in this build tree).
        target_link_libraries(${_t} PRIVATE $<BUILD_INTERFACE:PkgConfig::CJSON>
                                            $<INSTALL_INTERFACE:cjson>)
      endif()
    endforeach()
  endfunction()
  cmake_language(DEFER CALL _moe_link_cjson)
endif()
