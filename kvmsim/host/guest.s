# The test guest of kvmsim.host: 16-bit real mode, loaded at guest-physical 0 with CS = DS =
# SS = 0 and FS's base at the local APIC page (0xfee00000). _guest.py holds these bytes
# assembled (python -m kvmsim.host._guest regenerates it; tests/test_host.py checks it).
#
# The guest's clock is `stops`: every exit to the VMM (an OUT to port 0x10, 0x11 or 0x12)
# counts one. Each NMI and IRQ it takes is logged with the stop count at delivery, so the
# VMM knows between which two stops the kernel delivered it.
    .code16
    .text
    .org 2*4                 # IVT vector 2: NMI
    .word nmi_entry, 0
    .org 0x40*4              # IVT vector 0x40: the test interrupt (an MSI to the LAPIC)
    .word irq_entry, 0

    .org 0x500
nmi_count:  .word 0
irq_count:  .word 0
stops:      .word 0          # exits to the VMM so far
nmi_stops:  .word 0          # this many NMI handlers stop inside themselves (port 0x11)
irq_stops:  .word 0          # this many IRQ handlers stop inside themselves (port 0x12)
spin:       .long 0          # loop iterations the main loop runs after each stop (>= 1)
log_len:    .word 0
hold:       .word 0          # after the spin the main loop waits while this is non-zero
    .org 0x520
log:        .fill 64, 2, 0   # one word per delivery: kind (1 NMI, 2 IRQ) << 8 | stops

    .org 0x1000
main:
    movw $0x7000, %sp
stop:
    incw stops
    movw stops, %ax
    outw %ax, $0x10
    movl spin, %ecx
1:  addr32 loop 1b
2:  cmpw $0, hold
    jne 2b
    jmp stop

# append kind (%ah) | stops to the log
log_delivery:
    movw log_len, %bx
    andw $63, %bx
    shlw $1, %bx
    movb stops, %al
    movw %ax, log(%bx)
    incw log_len
    ret

nmi_entry:
    pushw %ax
    pushw %bx
    movb $1, %ah
    call log_delivery
    incw nmi_count
    cmpw $0, nmi_stops
    je 1f
    decw nmi_stops
    incw stops
    movw stops, %ax
    outw %ax, $0x11
1:  popw %bx
    popw %ax
    iret

irq_entry:
    pushw %ax
    pushw %bx
    movb $2, %ah
    call log_delivery
    incw irq_count
    cmpw $0, irq_stops
    je 1f
    decw irq_stops
    incw stops
    movw stops, %ax
    outw %ax, $0x12
1:  movl $0, %fs:0xb0        # EOI
    popw %bx
    popw %ax
    iret
