#!/usr/bin/env python3
"""Rewrites a CUDA source for the emulation build (tests/emulator/README.md):

  kernel<targs><<<grid, block, smem, stream>>>(args...)
    -> moe_emu::launch_kernel(dim3(grid), dim3(block), smem, stream, "kernel<targs>", &kernel<targs>,
                              [](auto... a) { kernel<targs>(a...); }, args...)
  extern __shared__ T name[];  ->  T *name = static_cast<T *>(moe_emu::dynamic_smem());

Everything else is left as it is, and every line keeps its number (a #line directive names the
original file), so compiler errors, debuggers and sanitizers point into the real source.

usage: rewrite_kernels.py INPUT OUTPUT
"""
import re
import sys

IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def skip_balanced(src, i, open_ch, close_ch):
    """src[i] == open_ch; returns the index just past the matching close_ch."""
    depth = 0
    while i < len(src):
        c = src[i]
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise SyntaxError("unbalanced %s" % open_ch)


def split_top_level(text):
    """Splits at commas outside (), [], {} and template brackets (a '<' right after a name)."""
    parts, depth, angle, cur = [], 0, 0, ""
    for k, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "<" and k > 0 and (text[k - 1].isalnum() or text[k - 1] == "_"):
            angle += 1
        elif c == ">" and angle > 0:
            angle -= 1
        if c == "," and depth == 0 and angle == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


def template_kernels(src):
    """Names of __global__ functions declared as templates (their address needs explicit args)."""
    names = set()
    for m in re.finditer(r"\b__global__\b", src):
        start = max(src.rfind(";", 0, m.start()), src.rfind("}", 0, m.start()), src.rfind("{", 0, m.start()))
        is_template = "template" in src[start + 1:m.start()]
        i = m.end()
        while i < len(src):  # the first name followed by '(' that is not __launch_bounds__
            mi = IDENT.match(src, i)
            if mi:
                j = mi.end()
                while j < len(src) and src[j].isspace():
                    j += 1
                if j < len(src) and src[j] == "(":
                    if mi.group(0) == "__launch_bounds__":
                        i = skip_balanced(src, j, "(", ")")
                        continue
                    if is_template:
                        names.add(mi.group(0))
                    break
                i = mi.end()
            else:
                i += 1
    return names


def rewrite_launches(src, templates):
    out, pos = [], 0
    while True:
        k = src.find("<<<", pos)
        if k < 0:
            out.append(src[pos:])
            return "".join(out)
        # The kernel expression before <<<: name, optionally with <template args>.
        e = k
        while src[e - 1].isspace():
            e -= 1
        targs = ""
        if src[e - 1] == ">":
            depth, j = 0, e - 1
            while True:
                if src[j] == ">":
                    depth += 1
                elif src[j] == "<":
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            targs = src[j:e]
            e = j
        n = e
        while n > 0 and (src[n - 1].isalnum() or src[n - 1] in "_:"):
            n -= 1
        name = src[n:e]
        if not name:
            raise SyntaxError("no kernel name before <<< at offset %d" % k)
        # The configuration between <<< and >>>.
        depth, j = 0, k + 3
        while True:
            if src.startswith(">>>", j) and depth == 0:
                break
            if src[j] in "([{":
                depth += 1
            elif src[j] in ")]}":
                depth -= 1
            j += 1
        cfg = split_top_level(src[k + 3:j])
        if not 2 <= len(cfg) <= 4:
            raise SyntaxError("launch of %s: %d configuration values" % (name, len(cfg)))
        while len(cfg) < 4:
            cfg.append("0")
        a = j + 3
        while src[a].isspace():
            a += 1
        if src[a] != "(":
            raise SyntaxError("launch of %s: no argument list" % name)
        end = skip_balanced(src, a, "(", ")")
        args = src[a + 1:end - 1].strip()
        kernel = name + targs
        base = name.split("::")[-1]
        addr = "nullptr" if (base in templates and not targs) else "reinterpret_cast<const void *>(&%s)" % kernel
        call = ("::moe_emu::launch_kernel(dim3(%s), dim3(%s), static_cast<size_t>(%s), "
                "static_cast<cudaStream_t>(%s), \"%s\", %s, [](auto... moe_emu_arg) { %s(moe_emu_arg...); }%s)"
                % (cfg[0], cfg[1], cfg[2], cfg[3], kernel.replace('"', '\\"'), addr, kernel,
                   (", " + args) if args else ""))
        out.append(src[pos:n])
        out.append(call)
        out.append("\n" * src[n:end].count("\n"))  # keep the line numbers of what follows
        pos = end


EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+((?:[^;\[\]])*?)\s*\b([A-Za-z_]\w*)\s*\[\s*\]\s*;")


def rewrite_extern_shared(src):
    def repl(m):
        typ = re.sub(r"__align__\s*\(\s*\d+\s*\)", "", m.group(1)).strip()
        return "%s *%s = static_cast<%s *>(::moe_emu::dynamic_smem());" % (typ, m.group(2), typ)
    return EXTERN_SHARED.sub(repl, src)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src_path, out_path = sys.argv[1], sys.argv[2]
    with open(src_path) as f:
        src = f.read()
    src = rewrite_extern_shared(src)
    src = rewrite_launches(src, template_kernels(src))
    with open(out_path, "w") as f:
        f.write('#line 1 "%s"\n' % src_path)
        f.write(src)


if __name__ == "__main__":
    main()
