# Writes a C++ source defining `const char NAME[]` with the contents of INPUT, so that
# a file (the chat page) is compiled into the binary. Run with cmake -P.
file(READ "${INPUT}" content)
string(FIND "${content}" ")dsinfer_embed\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )dsinfer_embed\"")
endif()
file(WRITE "${OUTPUT}" "// Generated from ${INPUT} by embed.cmake; do not edit.\nnamespace server {\nextern const char ${NAME}[];\nconst char ${NAME}[] = R\"dsinfer_embed(${content})dsinfer_embed\";\n}\n")
