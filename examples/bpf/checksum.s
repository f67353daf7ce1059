# The Internet checksum (RFC 1071) of the memory at r1 (length r2), as a
# network stack would compute it for an IPv4 header. Run it with:
#   userbpf run examples/bpf/checksum.s --mem "45 00 00 73 00 00 40 00 40 11 00 00 c0 a8 00 01 c0 a8 00 c7"
    mov %r0, 0
    mov %r3, %r1
    add %r3, %r2
    mov %r4, %r2
    and %r4, 1
    sub %r3, %r4
loop:
    jge %r1, %r3, tail
    ldxh %r5, [%r1]
    be16 %r5
    add %r0, %r5
    add %r1, 2
    ja loop
tail:
    jeq %r4, 0, fold
    ldxb %r5, [%r1]
    lsh %r5, 8
    add %r0, %r5
fold:
    mov %r5, %r0
    rsh %r5, 16
    and %r0, 0xffff
    add %r0, %r5
    jgt %r0, 0xffff, fold
    xor %r0, 0xffff
    exit
