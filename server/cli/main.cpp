// otahub: the admin command line. Everything lives in server/cli/run.cpp and the commands_*.cpp.
#include "server/cli/commands.hpp"

int main(int argc, char** argv) { return otahub::cli::run(argc, argv); }
